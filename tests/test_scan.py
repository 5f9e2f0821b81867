"""A rog run attacked on the scan as stored: `rog.infer.scan.RogScan` is `predict_case` (no
post-processing) as one differentiable function of the scan."""
import json

import numpy as np
import pytest
import torch

from rog.checkpoint import save_checkpoint
from rog.cli import main
from rog.data.dataset import load_dataset
from rog.data.io import read_image, read_label, write_volume
from rog.data.preprocess import resample
from rog.infer.predictor import predict_case
from rog.infer.resample import Resampling
from rog.infer.scan import RogScan
from rog.infer.sliding_window import SlidingWindow
from rog.models.registry import build_model
from rog.rundir import RunDir


@pytest.mark.parametrize("shape,new,axis", [((11, 17, 9), (14, 13, 12), None), ((19, 16, 7), (23, 13, 12), 2)])
def test_resampling_is_rogs_preprocessing(shape, new, axis):
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    theirs = resample(x, new, order=3, axis=axis)
    ours = Resampling(shape, new, 3, axis, 0, engine="zoom")(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-5 * np.abs(theirs).max()


@pytest.fixture(scope="module")
def run(prepared, tmp_path_factory):
    """A run folder of a randomly initialised ROG (width 4) with the CT task's plan, its head
    centred on the test case so that every class is drawn."""
    _, plan = prepared
    path = RunDir(tmp_path_factory.mktemp("runs") / "random")
    path.path.mkdir()
    plan.save(path.plan)
    path.config.write_text(json.dumps({"model": "rog"}))
    torch.manual_seed(0)
    model = build_model(plan, "rog").eval()
    save_checkpoint(path.checkpoint("best"), {"model": model.state_dict()})
    return path


def _z_first(image, geometry, tmp_path):
    """The same scan stored z-first (axes permuted, the affine's columns with them)."""
    affine = np.asarray(geometry.affine)[:, [2, 0, 1, 3]]
    write_volume(tmp_path / "zfirst.nii.gz", image[0].transpose(2, 0, 1), affine)
    return read_image([tmp_path / "zfirst.nii.gz"])


@pytest.mark.parametrize("stored", ["as-written", "z-first"])
def test_the_attacked_function_is_predict_case_on_the_perturbed_scan(ct_task, run, tmp_path, stored):
    from rog.checkpoint import load_run
    model, plan, _ = load_run(run.path)
    case = load_dataset(ct_task).test[0]
    image, geometry = read_image(case.images)
    if stored == "z-first":
        image, geometry = _z_first(image, geometry, tmp_path)
    pipeline = RogScan(SlidingWindow(model, plan.val_patch_size), geometry, plan)
    x = torch.from_numpy(image)[None]
    noise = torch.from_numpy(np.random.default_rng(1).choice([-8 / 255, 8 / 255], size=x.shape)).float()
    span = x.amax((2, 3, 4), keepdim=True) - x.amin((2, 3, 4), keepdim=True)
    for v in (x, x + noise * span):
        label, probabilities = predict_case(model, v[0].numpy(), geometry, plan, probabilities=True)
        with torch.no_grad():
            mine = pipeline(v)[0]
        assert mine.shape[1:] == label.shape
        assert np.abs(mine.exp().numpy() - probabilities).max() < 1e-4
        assert (mine.argmax(0).numpy() == label).mean() >= 0.9999
        assert len(np.unique(label)) >= 2


def test_the_pipelines_input_gradient_is_its_finite_difference(prepared):
    import copy
    plan = copy.deepcopy(prepared[1])
    plan.normalization = [{"scheme": "ct", "mean": 10.0, "std": 200.0, "lower": -400.0, "upper": 500.0}]
    plan.target_spacing = [0.9, 1.1, 1.7]
    from rog.data.io import Geometry
    geometry = Geometry.of(np.diag([1.2, 0.8, 2.5, 1.0]), (8, 9, 5), (1.2, 0.8, 2.5))
    net = torch.nn.Conv3d(1, 3, 3, padding=1).double()
    pipeline = RogScan(net, geometry, plan)
    x = torch.from_numpy(np.random.default_rng(0).normal(50, 300, (1, 1, 8, 9, 5)))
    assert ((x < -400) | (x > 500)).any()  # the clip acts
    weight = torch.randn(1, 3, 8, 9, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: (pipeline(v) * weight).sum(), (x.requires_grad_(),), eps=1e-4,
                                    atol=1e-6, rtol=1e-4)


def test_rog_attack_on_a_runs_scans_with_one_command(ct_task, run, tmp_path):
    ds = load_dataset(ct_task)
    images, labels = tmp_path / "images", tmp_path / "labels"
    for case in ds.test:
        image, geometry = read_image(case.images)
        write_volume(images / f"{case.name}.nii.gz", image[0], np.asarray(geometry.affine))
        label, lgeom = read_label(case.label)
        write_volume(labels / f"{case.name}.nii.gz", label, np.asarray(lgeom.affine))
    out = tmp_path / "att"
    code = main(["attack", str(run.path), "--images", str(images), "--labels", str(labels), "--eps", "8",
                 "--attacks", "apgd-ce", "--iterations", "2", "-o", str(out)])
    doc = json.loads((out / "results.json").read_text())
    assert code == (1 if any(c["status"] == "fail" for c in doc["checks"]) else 0)
    assert doc["config"]["scope"] == "volume" and doc["meta"]["cases_source"] == "folders"
    assert doc["meta"]["seed"] == 0 and doc["meta"]["run"] == str(run.path.resolve())  # grouped with its seeds
    rec, = doc["records"]
    assert rec["in_ball"] and rec["in_box"] and rec["dice"] <= doc["clean"][rec["case"]]["dice"]
