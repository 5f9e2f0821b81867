"""Scanner artefacts: the corruptions, the sweep and its records, and training with them."""
import json

import numpy as np
import pytest
import torch

from rog.bench.corruption import CorruptionConfig, CorruptionSweep
from rog.cli import main
from rog.corruptions import CORRUPTIONS, corrupt, seed_of
from tests.conftest import self_labelled_cases

SPACING = (1.0, 1.0, 3.0)


def _volume(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2, 24, 20, 10)
    x[1] = x[1] * 50 + 300  # a second channel on another scale: corrupted in its own range
    return x, x.flatten(1).amin(1), x.flatten(1).amax(1), x.flatten(1).std(1)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_seeded_identity_at_zero_and_grows_with_severity(name):
    x, lo, hi, sd = _volume()
    seed = seed_of("case_000", name)
    a, b = corrupt(x, name, 3, SPACING, lo, hi, sd, seed), corrupt(x, name, 3, SPACING, lo, hi, sd, seed)
    assert torch.equal(a, b) and a.shape == x.shape and torch.isfinite(a).all()
    if name not in ("blur", "gamma", "ghosting", "spike", "anisotropy"):  # these draw nothing random
        assert not torch.equal(a, corrupt(x, name, 3, SPACING, lo, hi, sd, seed_of("case_001", name)))
    torch.testing.assert_close(corrupt(x, name, 0, SPACING, lo, hi, sd, seed), x, atol=1e-4 * float(hi.max()), rtol=0)
    change = [float((corrupt(x, name, s, SPACING, lo, hi, sd, seed) - x).abs().mean() / (hi - lo).mean())
              for s in (1, 5)]
    assert 0 < change[0] < change[1], change


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_higher_severity_is_the_same_artefact_made_stronger(name):
    x, lo, hi, sd = _volume()
    for case in ("case_000", "case_001", "case_002"):
        sizes = []
        for severity in range(6):
            realised: list[float] = []
            corrupt(x, name, severity, SPACING, lo, hi, sd, seed_of(case, name), realised)
            assert len(realised) == 2  # one per channel
            sizes.append(realised)
        sizes = np.array(sizes)  # [severity, channel]
        # motion in degrees and mm, bias coefficients, noise sd, ...: never smaller at a higher severity
        assert (np.diff(sizes, axis=0) > 0).all(), (case, sizes)


def _cases(model, n=2):
    return self_labelled_cases(model, n, (20, 20, 12), seed=1)


def test_sweep_records_resume_and_checks(net, tmp_path):
    cfg = CorruptionConfig(corruptions=["noise", "blur", "anisotropy"], severities=[1, 5])
    cases = _cases(net)
    doc = CorruptionSweep(net, 3, cfg, tmp_path, (16, 16, 8), SPACING, progress=False).run(cases)
    assert doc.kind == "corruption" and len(doc.records) == 2 * 3 * 2
    s = doc.summary
    blur = s.corruptions["blur"]
    mean = np.mean([r.dice for r in doc.records if r.corruption == "blur" and r.severity == 5])
    assert blur.severity["5"] == pytest.approx(mean) and blur.severity["5"] < s.clean_dice
    assert 0 < blur.relative_auc < 1
    statuses = {c.name: c.status for c in doc.checks}
    assert statuses["severity 0 is clean"] == "pass" and statuses["finite"] == "pass"
    assert (tmp_path / "results.csv").read_text().startswith("case,corruption,severity,dice")
    again = CorruptionSweep(net, 3, cfg, tmp_path, (16, 16, 8), SPACING, progress=False).run(cases)
    assert [r.dice for r in again.records] == [r.dice for r in doc.records]  # resumed, nothing redone


def test_corruption_error_relative_to_a_baseline():
    from rog.evaluate.corruption import corruption_errors
    from rog.results import CorruptionStats, CorruptionSummary

    def summary(d1, d2):
        return CorruptionSummary(1.0, {"noise": CorruptionStats({"1": d1, "2": d2}, (d1 + d2) / 2, None)}, 0.0, {})
    ce, mce = corruption_errors(summary(0.9, 0.7), summary(0.8, 0.6))
    assert ce["noise"] == pytest.approx(0.4 / 0.6) and mce == pytest.approx(0.4 / 0.6)


def test_corrupt_command_names_bad_arguments_and_writes_nothing(ct_task, tmp_path, capsys):
    from rog.pipeline.stages import run_preprocessing
    wd, plan, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    plan.width = 4
    plan.save(tmp_path / "plan.json")
    common = ["corrupt", "--model", "rog", "--plan", str(tmp_path / "plan.json"), "--data", str(wd.preprocessed),
              "--device", "cpu", "-o", str(tmp_path / "out")]
    assert main([*common, "--corruptions", "noise", "smudge"]) == 2
    assert "unknown corruption 'smudge'" in capsys.readouterr().err
    for bad in ("0", "6"):
        with pytest.raises(SystemExit):
            main([*common, "--severities", bad])
        assert "--severities" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([*common, "--corruptions", "motion", "--severities", "2"]) == 0
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["corruption"], r["severity"]) for r in doc["records"]] == [("motion", 2)]


def test_training_patches_with_corruptions(ct_task, tmp_path):
    from rog.data.preprocess import labelled_cases
    from rog.train.data import TrainPatches
    from rog.pipeline.stages import run_preprocessing
    wd, plan, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    cases = labelled_cases(wd.preprocessed)
    args = (wd.preprocessed, cases, plan.crop_size, plan.patch_size, 8)
    plain, corrupted = TrainPatches(*args), TrainPatches(*args, corruption_spacing=plan.target_spacing)
    same = [torch.equal(plain[i][0], corrupted[i][0]) for i in range(8)]
    assert any(same) and not all(same)  # half the patches, on average, get an artefact
    assert all(torch.equal(plain[i][1], corrupted[i][1]) for i in range(8))  # labels untouched


def test_save_volumes_writes_what_broke_the_model_in_the_scans_geometry(ct_task, tmp_path, capsys):
    import nibabel as nib
    from rog.data.dataset import load_dataset
    from rog.data.preprocess import load_case
    from rog.pipeline.stages import run_preprocessing
    wd, plan, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    plan.width = 4
    plan.save(tmp_path / "plan.json")
    model = ["--model", "rog", "--plan", str(tmp_path / "plan.json"), "--data", str(wd.preprocessed), "--device", "cpu"]
    out = tmp_path / "att"
    assert main(["attack", *model, "--eps", "8", "--attacks", "pgd", "--iterations", "2", "--scope", "volume",
                 "--save-volumes", "-o", str(out)]) in (0, 1)  # an untrained model may fail a check
    case = "synthct_004"
    source = nib.load(str(next(c for c in load_dataset(ct_task).test if c.name == case).images[0]))
    folder = out / "volumes" / case
    # the case was resampled: the exact inputs also on the model's grid (grid_*)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{n}.nii.gz" for n in ("clean", "eps8.0", "eps8.0_delta", "pred_clean", "pred_eps8.0", "grid_clean",
                                "grid_eps8.0", "grid_eps8.0_delta"))
    for name in ("clean", "eps8.0", "pred_eps8.0"):  # opens in the scan's own grid
        img = nib.load(str(folder / f"{name}.nii.gz"))
        assert img.shape == source.shape and np.allclose(img.affine, source.affine, atol=1e-5)
    raw = np.asarray(source.dataobj, np.float32)
    clean = np.asarray(nib.load(str(folder / "clean.nii.gz")).dataobj)
    delta = np.asarray(nib.load(str(folder / "eps8.0_delta.nii.gz")).dataobj)
    adv = np.asarray(nib.load(str(folder / "eps8.0.nii.gz")).dataobj)
    # the clean scan is the scan as stored, Hounsfield units beyond the plan's CT window included
    props = load_case(wd.preprocessed, case)[2]
    (mean, std), = props["intensity"]
    np.testing.assert_array_equal(clean, raw)
    # the perturbation, in HU, resampled back: inside the ball (8/255 of the case's range) and not zero
    x = np.load(wd.preprocessed / f"{case}.npy")
    radius = 8 / 255 * float(x.max() - x.min()) * std
    assert 0 < np.abs(delta).max() <= radius * (1 + 1e-4)
    np.testing.assert_allclose(adv - clean, delta, atol=1e-3)
    # on the model's grid, exactly what the attack did: the preprocessed case, the ball and box in its units
    grid = {n: nib.load(str(folder / f"grid_{n}.nii.gz")) for n in ("clean", "eps8.0", "eps8.0_delta")}
    np.testing.assert_array_equal(np.asarray(grid["clean"].dataobj)[None], x)
    # the spacing resampling reached (the target, up to the rounding of the shape)
    np.testing.assert_allclose(np.linalg.norm(grid["clean"].affine[:3, :3], axis=0), plan.target_spacing, rtol=0.02)
    grid_delta = np.asarray(grid["eps8.0_delta"].dataobj)
    assert 0 < np.abs(grid_delta).max() <= 8 / 255 * float(x.max() - x.min()) * (1 + 1e-5)
    grid_adv = np.asarray(grid["eps8.0"].dataobj)
    assert x.min() - 1e-5 <= grid_adv.min() and grid_adv.max() <= x.max() + 1e-5
    # the grid sits where the scan is: its centre voxel is the scan's point at the same world position
    centre = (np.array(grid_adv.shape) - 1) / 2
    world = grid["clean"].affine @ [*centre, 1]
    assert np.all(np.abs(np.linalg.solve(source.affine, world)[:3] - (np.array(raw.shape) - 1) / 2) < 2.5)
    # corruptions: each corrupted volume beside the clean one
    assert main(["corrupt", *model, "--corruptions", "noise", "--severities", "3", "--save-volumes",
                 "-o", str(tmp_path / "cor")]) in (0, 1)
    assert (tmp_path / "cor" / "volumes" / case / "noise_s3.nii.gz").is_file()
    assert (tmp_path / "cor" / "volumes" / case / "noise_s3_delta.nii.gz").is_file()
    # an attacked patch is written as its whole case, the patch put back where it was taken
    assert main(["attack", *model, "--eps", "8", "--attacks", "pgd", "--iterations", "2", "--save-volumes",
                 "-o", str(tmp_path / "p")]) in (0, 1)
    patch_delta = np.asarray(nib.load(str(tmp_path / "p" / "volumes" / case / "eps8.0_delta.nii.gz")).dataobj)
    assert patch_delta.shape == source.shape and 0 < np.abs(patch_delta).max() <= radius * (1 + 1e-4)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "p" / "volumes" / case / "clean.nii.gz")).dataobj),
                                  raw)  # patch scope too: the clean volume is the scan
    assert (tmp_path / "p" / "volumes" / case / "pred_eps8.0.nii.gz").is_file()
    # the report links every saved volume, relative to the page
    import re
    assert main(["report", str(out), str(tmp_path / "cor"), "-o", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    links = re.findall(r"<a href='([^']+)'>", html)
    assert links[-1] == "viewer.html" and (tmp_path / "rep" / "viewer.html").is_file()  # and the 3D viewer of them
    links = links[:-1]
    assert "Volumes that broke the models" in html and len(links) == 8 + 8  # each with its grid_ files
    assert all((tmp_path / "rep" / link).is_file() for link in links)
