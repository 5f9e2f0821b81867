"""A user's own model benchmarked on raw scans with one command: no plan, no rog
preprocessing, the model's identity in the results, MONAI's inferer as the reference."""
import json

import numpy as np
import pytest
import torch

from rog.atomic import file_hash
from rog.cli import main
from rog.data.io import read_image, read_label, write_volume
from rog.data.synthetic import make_task
from rog.evaluate.metrics import dice_per_class
from tests.factories import HUWindow


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """(images, labels, a TorchScript file of `HUWindow`) of two raw CT-like scans."""
    root = tmp_path_factory.mktemp("raw")
    raw = make_task(root / "ds", kind="ct", cases=1, test_cases=2, seed=1, size=(24, 28), layout="nnunet")
    path = root / "hu_window.pt"
    torch.jit.save(torch.jit.script(HUWindow()), str(path))
    return raw / "imagesTs", raw / "labelsTs", path


def _clean_dice(images, labels, predict) -> dict[str, list[float]]:
    out = {}
    for f in sorted(images.glob("*_0000.nii.gz")):
        name = f.name[:-len("_0000.nii.gz")]
        x = torch.from_numpy(read_image([f])[0])[None]
        with torch.no_grad():
            pred = predict(x).argmax(1)[0].numpy()
        out[name] = dice_per_class(pred, read_label(labels / f"{name}.nii.gz")[0], 3).tolist()
    return out


def test_a_torchscript_model_is_benchmarked_from_raw_scans_with_one_command(scans, tmp_path, capsys):
    from monai.inferers import sliding_window_inference
    images, labels, scripted = scans
    out = tmp_path / "out"
    args = ["attack", "--checkpoint", str(scripted), "--images", str(images), "--labels", str(labels), "--eps", "8",
            "--attacks", "apgd-ce", "--iterations", "3", "--window", "16", "16", "8", "--overlap", "0.25",
            "-o", str(out)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["provenance"]["model"] == "torchscript:hu_window.pt"
    assert doc["provenance"]["weights"] == file_hash(scripted)
    assert doc["config"]["scope"] == "volume" and doc["meta"]["model"]["input"] == [16, 16, 8]
    # clean Dice: MONAI's inferer on the scan as stored, same window, overlap and Gaussian weights
    model = torch.jit.load(str(scripted)).eval()
    reference = _clean_dice(images, labels, lambda x: sliding_window_inference(
        x, (16, 16, 8), 4, model, overlap=0.25, mode="gaussian", padding_mode="constant"))
    for name, score in doc["clean"].items():
        np.testing.assert_allclose(score["dice_per_class"][0], reference[name][0], atol=1e-9)
        assert score["dice_per_class"][0] > 0.5  # the hand-made segmenter finds the organ
    recs = doc["records"]
    assert len(recs) == 2 and all(r["in_ball"] and r["in_box"] for r in recs)
    assert all(r["dice"] < doc["clean"][r["case"]]["dice"] for r in recs)
    # a different model may not continue these results
    capsys.readouterr()
    other = ["attack", "--model", "tests.factories:hu_window", *args[3:]]
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.json" in err[0] and "different model weights" in err[0]


def test_a_factory_without_window_takes_each_scan_whole(scans, tmp_path):
    images, labels, _ = scans
    out = tmp_path / "corr"
    assert main(["corrupt", "--model", "tests.factories:hu_window", "--images", str(images), "--labels", str(labels),
                 "--corruptions", "noise", "--severities", "1", "-o", str(out), "--save-volumes"]) in (0, 1)
    doc = json.loads((out / "results.json").read_text())
    assert doc["provenance"]["model"] == "tests.factories:hu_window" and doc["provenance"]["weights"] is None
    reference = _clean_dice(images, labels, HUWindow().eval())
    for name, score in doc["clean"].items():
        np.testing.assert_allclose(score["dice_per_class"], reference[name], atol=1e-9)
    assert {r["corruption"] for r in doc["records"]} == {"noise"} and len(doc["records"]) == 2
    # --save-volumes: the corrupted scan on the scan's own grid (nibabel opens it)
    import nibabel as nib
    for name in doc["clean"]:
        scan = nib.load(images / f"{name}_0000.nii.gz")
        noisy = nib.load(out / "volumes" / name / "noise_s1.nii.gz")
        assert noisy.shape == scan.shape and np.allclose(noisy.affine, scan.affine, atol=1e-4)
        clean = np.asarray(nib.load(out / "volumes" / name / "clean.nii.gz").dataobj)
        assert np.array_equal(clean, np.asarray(scan.dataobj, np.float32))
        assert np.abs(np.asarray(noisy.dataobj) - clean).max() > 0
        assert nib.load(out / "volumes" / name / "pred_noise_s1.nii.gz").shape == scan.shape


@pytest.mark.parametrize("problem", ["plan", "window_alone", "shape"])
def test_raw_model_mistakes_are_one_line(scans, tmp_path, capsys, problem):
    images, labels, scripted = scans
    args = ["attack", "--checkpoint", str(scripted), "--images", str(images), "--labels", str(labels), "--eps", "8",
            "--attacks", "pgd", "--iterations", "1", "-o", str(tmp_path / "out")]
    if problem == "plan":
        args += ["--plan", str(tmp_path / "plan.json")]
    elif problem == "window_alone":
        args = ["attack", str(tmp_path), "--window", "8", "8", "8"]
    else:  # a label on another grid
        bad = tmp_path / "labels"
        bad.mkdir()
        for f in labels.iterdir():
            label, geometry = read_label(f)
            write_volume(bad / f.name, label[:-1], np.asarray(geometry.affine))
        args[args.index(str(labels))] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    expected = {"plan": "--plan: for a model on rog's preprocessed cases",
                "window_alone": "--window: for a model given with --model or --checkpoint and --images",
                "shape": "differs from the image's"}[problem]
    assert expected in err[0], err[0]
    assert not (tmp_path / "out" / "results.json").exists()
