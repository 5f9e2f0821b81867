import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from rog.checkpoint import save_checkpoint
from rog.cli import main
from rog.data.dataset import load_dataset
from rog.data.io import read_label, write_volume
from rog.infer.predictor import cases_from_input, predict_cases
from rog.plan import plan_for


class Oracle(nn.Module):
    """Reads the label back from an image that encodes it as 100 * label (identity
    normalisation): logit_k = -(x - 100 k)^2 / 100."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.register_buffer("centres", torch.arange(num_classes, dtype=torch.float32) * 100)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return -((x[:, :1] - self.centres.view(1, -1, 1, 1, 1)) ** 2) / 100 * self.scale


def oracle(plan):
    return Oracle(plan.num_classes)


def _identity_plan(spacing):
    plan = plan_for(1, 3, (1, 1, 2), patch_size=(16, 16, 16))
    plan.normalization = [{"scheme": "ct", "mean": 0.0, "std": 1.0, "lower": -1e9, "upper": 1e9}]
    plan.target_spacing = list(spacing)
    plan.val_patch_size = [32, 32, 16]
    return plan


def test_prediction_keeps_the_input_geometry_and_is_aligned(ct_task, tmp_path):
    ds = load_dataset(ct_task)
    src = ds.training[0]
    label, geom = read_label(src.label)
    assert geom.orientation != "RAS" and geom.spacing[2] > 2
    image_dir = tmp_path / "images"
    write_volume(image_dir / "case.nii.gz", (100.0 * label).astype(np.float32), np.array(geom.affine))
    plan = _identity_plan([0.6, 0.7, 1.5])  # forces resampling there and back
    status = predict_cases(Oracle(), plan, cases_from_input(image_dir), tmp_path / "pred", progress=False)
    assert status == {"case": "ok"}
    out = nib.load(str(tmp_path / "pred" / "case.nii.gz"))
    assert out.shape == label.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, np.array(geom.affine), atol=1e-5)
    pred = np.asarray(out.dataobj)
    for k in (1, 2):
        inter = np.sum((pred == k) & (label == k))
        assert 2 * inter / (np.sum(pred == k) + np.sum(label == k)) > 0.9


def test_a_failing_case_is_reported_and_the_others_complete(tmp_path):
    lab = np.zeros((20, 20, 20), np.float32)
    lab[5:15, 5:15, 5:15] = 100
    write_volume(tmp_path / "in" / "good.nii.gz", lab, np.eye(4))
    write_volume(tmp_path / "in" / "two_channels.nii.gz", np.stack([lab, lab], -1), np.eye(4))
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not a nifti")
    status = predict_cases(Oracle(), _identity_plan([1, 1, 1]), cases_from_input(tmp_path / "in"),
                           tmp_path / "out", progress=False)
    assert status["good"] == "ok"
    assert "channel" in status["two_channels"] and "broken.nii.gz" in status["broken"]
    assert (tmp_path / "out" / "good.nii.gz").is_file()


def test_nnunet_style_input_folder(tmp_path):
    for c in range(2):
        write_volume(tmp_path / f"abc_{c:04d}.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    write_volume(tmp_path / "abcd_0000.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    cases = {c.name: c for c in cases_from_input(tmp_path)}
    assert set(cases) == {"abc", "abcd"} and len(cases["abc"].images) == 2


def test_predict_and_evaluate_commands(ct_task, tmp_path, capsys):
    ds = load_dataset(ct_task)
    label, geom = read_label(ds.training[1].label)
    images, refs = tmp_path / "images", tmp_path / "refs"
    write_volume(images / "c1.nii.gz", (100.0 * label).astype(np.float32), np.array(geom.affine))
    write_volume(refs / "c1.nii.gz", label.astype(np.uint8), np.array(geom.affine))
    plan = _identity_plan(geom.spacing)
    plan.save(tmp_path / "plan.json")
    save_checkpoint(tmp_path / "w.pt", {"model": Oracle().state_dict()})
    code = main(["predict", "--model", "tests.test_predictor:oracle", "--plan", str(tmp_path / "plan.json"),
                 "--checkpoint", str(tmp_path / "w.pt"), "-i", str(images), "-o", str(tmp_path / "pred"),
                 "--device", "cpu", "-v"])
    assert code == 0
    stages = capsys.readouterr().out
    for stage in ("read", "preprocess", "sliding window", "inverse", "write"):
        assert f"{stage} " in stages  # rog predict -v: the seconds of each stage
    assert main(["evaluate", str(refs), str(tmp_path / "pred"), "--classes", "3"]) == 0
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["mean_per_class"]["dice"][0] > 0.99 and summary["mean_per_class"]["dice"][1] > 0.99
    assert summary["foreground_mean"]["Dice"] > 0.99 and set(summary["mean"]) == {"1", "2"}  # nnU-Net's keys too
    assert (tmp_path / "pred" / "summary.csv").read_text().startswith("case,class,dice,hd95,nsd")
    assert "class1: Dice" in capsys.readouterr().out  # the class names of the plan the predictions record


def test_evaluate_writes_the_summary_json_nnunet_writes(tmp_path):
    # the same folders through nnU-Net's own evaluation: its keys, its numbers (a label missing
    # from a case's prediction and reference is NaN in both, and left out of nnU-Net's mean)
    pytest.importorskip("nnunetv2")
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from rog.evaluate.folders import evaluate_folders
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.2, 2.0, 1.0])
    for name in ("a", "b"):
        ref = rng.integers(0, 3, (12, 10, 6)).astype(np.uint8)
        pred = np.where(rng.random(ref.shape) < 0.8, ref, rng.integers(0, 3, ref.shape)).astype(np.uint8)
        if name == "b":
            ref[ref == 2], pred[pred == 2] = 1, 1  # label 2 in neither: NaN Dice
        write_volume(tmp_path / "ref" / f"{name}.nii.gz", ref, affine)
        write_volume(tmp_path / "pred" / f"{name}.nii.gz", pred, affine)
    ours = evaluate_folders(tmp_path / "ref", tmp_path / "pred", 3, tmp_path / "pred" / "summary")
    compute_metrics_on_folder(str(tmp_path / "ref"), str(tmp_path / "pred"), str(tmp_path / "nn.json"), SimpleITKIO(),
                              ".nii.gz", [1, 2], num_processes=1)
    written = json.loads((tmp_path / "pred" / "summary.json").read_text())
    nn = json.loads((tmp_path / "nn.json").read_text())  # nnU-Net's file, its keys as strings
    assert set(nn) <= set(written)

    def flat(d, at=()):  # {(path...): number} of a nested dict
        return {k: v for key, val in d.items() for k, v in
                (flat(val, (*at, key)).items() if isinstance(val, dict) else [((*at, key), val)])}
    for key in ("mean", "foreground_mean"):
        assert flat(written[key]) == pytest.approx(flat(nn[key]), nan_ok=True)
    for mine, ref in zip(written["metric_per_case"], nn["metric_per_case"], strict=True):
        assert flat(mine["metrics"]) == pytest.approx(flat(ref["metrics"]), nan_ok=True)
    assert np.isnan(written["metric_per_case"][1]["metrics"]["2"]["Dice"])
    assert ours["mean_per_class"]["dice"][0] == pytest.approx(nn["mean"]["1"]["Dice"])
    assert Path(written["metric_per_case"][0]["reference_file"]).name == "a.nii.gz"
