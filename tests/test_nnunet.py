"""nnU-Net v2 results folders as benchmark models: a folder built offline by nnU-Net's own
planner, a network from its plans saved in nnU-Net's checkpoint format."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rog.cli import main

nnunetv2 = pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed (scripts/setup.sh --test installs it)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from nnunet_model import build  # noqa: E402 - the folder builder the benchmark uses too


@pytest.fixture(scope="module")
def nnunet_model(tmp_path_factory):
    """(model folder, raw dataset folder) of a 3d_fullres nnU-Net model (`nnunet_model.build`)."""
    return build(tmp_path_factory.mktemp("nnunet"))


def test_clean_prediction_agrees_with_nnunets_own_predictor(nnunet_model):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from rog.external.nnunet import load_nnunet
    model_dir, raw = nnunet_model
    ours = load_nnunet(model_dir, 0, tta=True)
    theirs = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                             perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    theirs.initialize_from_trained_model_folder(str(model_dir), use_folds=(0,))
    for name in ("synthct_004", "synthct_005"):
        files = [raw / "imagesTs" / f"{name}_0000.nii.gz"]
        data, props = theirs.plans_manager.image_reader_writer_class().read_images([str(f) for f in files])
        reference = theirs.predict_single_npy_array(data, props, None, None, False)
        mine = ours.predict(files)
        assert mine.shape == reference.shape
        counts = np.bincount(reference.ravel(), minlength=3) / reference.size
        assert (counts > 0.01).sum() >= 2  # random weights still draw a map with boundaries to agree on
        agreement = (mine == reference).mean()
        print(f"nnU-Net agreement {name}: {agreement:.5f} of {reference.size} voxels")  # docs/benchmarks.md
        assert agreement >= 0.999, (name, agreement)


def test_attack_lowers_dice_stays_in_the_raw_ball_and_resumes(nnunet_model, tmp_path, capsys):
    model_dir, raw = nnunet_model
    out = tmp_path / "att"
    args = ["attack", "--nnunet", str(model_dir), "--fold", "0", "--images", str(raw / "imagesTs"),
            "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "2", "-o", str(out)]
    code = main(args)
    doc = json.loads((out / "results.json").read_text())
    # a briefly trained toy model may fail the large-eps check: the exit code says so
    failed = any(c["status"] == "fail" for c in doc["checks"])
    assert code == (1 if failed else 0)
    assert doc["threat"]["scale"].startswith("/255 of each channel")
    assert doc["config"]["scope"] == "volume" and doc["meta"]["model"]["parameters"] > 0
    recs = [r for r in doc["records"] if not r.get("skipped")]
    assert len(recs) == 2 and all(r["in_ball"] and r["in_box"] and r["finite"] for r in recs)
    clean = {c: v["dice"] for c, v in doc["clean"].items()}
    assert all(r["dice"] <= clean[r["case"]] for r in recs) and any(r["dice"] < clean[r["case"]] for r in recs)
    assert {c["name"]: c["status"] for c in doc["checks"]}["ball, box and finite"] == "pass"
    # the box is the raw CT range: the preprocessed input holds Hounsfield units, not z-scores
    capsys.readouterr()
    before = (out / "results.json").read_bytes()
    assert main(args) == code  # resume: every record exists, nothing is recomputed
    assert json.loads((out / "results.json").read_text())["records"] == doc["records"]
    assert before  # the finished results were kept
    # the report lists the model with its size and curves, as it does rog's own
    assert main(["report", str(out), "-o", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    (name, entry), = summary["models"].items()
    assert name.startswith("nnU-Net Dataset001_Synth/nnUNetTrainer__nnUNetPlans__3d_fullres fold 0")
    assert entry["parameters"] > 1000 and entry["gflops"] > 0 and "8.0" in entry["eps"]
    assert "nnU-Net Dataset001_Synth" in (tmp_path / "report" / "report.html").read_text()


def test_worst_case_artefacts_run_on_the_nnunet_model_in_its_raw_intensities(nnunet_model, tmp_path, capsys):
    model_dir, raw = nnunet_model
    out = tmp_path / "art"
    code = main(["artefact", "--nnunet", str(model_dir), "--fold", "0", "--images", str(raw / "imagesTs"),
                 "--labels", str(raw / "labelsTs"), "--artefacts", "bias", "--severities", "3", "--draws", "2",
                 "--iterations", "2", "--restarts", "1", "-o", str(out)])
    doc = json.loads((out / "results.json").read_text())
    assert code == (1 if any(c["status"] == "fail" for c in doc["checks"]) else 0)
    assert doc["kind"] == "artefact" and doc["meta"]["label"].startswith("nnU-Net Dataset001_Synth")
    clean = {c: v["dice"] for c, v in doc["clean"].items()}
    assert len(doc["records"]) == len(clean) == 2
    for r in doc["records"]:  # the worst case never above clean, its parameters in bound, the input finite
        assert r["dice"] <= clean[r["case"]] + 1e-9 and r["in_bound"] and r["finite"]
        assert len(r["parameters"]["coefficients"]) == 20


def test_cases_hold_raw_intensities_and_normalise_inside_the_model(nnunet_model):
    from rog.external.nnunet import load_nnunet
    model_dir, raw = nnunet_model
    model = load_nnunet(model_dir, 0)
    (case,) = model.load_cases(raw / "imagesTs", raw / "labelsTs", ["synthct_004"])
    assert case.lo.min() <= -900 and case.hi.max() > 300  # Hounsfield units: air and spine
    z = case.prepare(case.x)
    assert z.abs().max() < 50 and not torch.equal(z, case.x)


@pytest.mark.parametrize("problem", ["not_a_model", "missing_fold", "channels"])
def test_bad_input_is_one_line_and_writes_nothing(nnunet_model, tmp_path, capsys, problem):
    model_dir, raw = nnunet_model
    images, folder, fold = raw / "imagesTs", model_dir, "0"
    if problem == "not_a_model":
        folder = raw
    elif problem == "missing_fold":
        fold = "3"
    else:  # a second channel the model does not take
        images = tmp_path / "images"
        images.mkdir()
        for f in (raw / "imagesTs").iterdir():
            (images / f.name).write_bytes(f.read_bytes())
            (images / f.name.replace("_0000", "_0001")).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    code = main(["attack", "--nnunet", str(folder), "--fold", fold, "--images", str(images), "--labels",
                 str(raw / "labelsTs"), "--eps", "8", "--attacks", "pgd", "--iters", "1", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    expected = {"not_a_model": "not an nnU-Net model folder", "missing_fold": "fold_3/checkpoint_final.pth: missing",
                "channels": "more channels than the model's 1"}[problem]
    assert expected in err[0], err[0]
    assert not (out / "results.json").exists()


def test_the_one_private_nnunet_call_is_pinned():
    # rog.external.nnunet.nnunet_normalised calls DefaultPreprocessor._normalize, nnU-Net's only
    # way to its normalisation; a renamed or re-signed method must fail here, not in a benchmark
    import inspect

    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    params = list(inspect.signature(DefaultPreprocessor._normalize).parameters)
    assert params == ["self", "data", "seg", "configuration_manager", "foreground_intensity_properties_per_channel"]
    src = (Path(__file__).resolve().parents[1] / "src" / "rog" / "external" / "nnunet.py").read_text()
    assert src.count("._normalize(") == 1  # isolated in nnunet_normalised
