"""MONAI bundles as benchmark models: a bundle folder written by the test."""
import json

import torch
import pytest

from rog.cli import main
from rog.data.synthetic import make_task

NET = {"_target_": "DynUNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "kernel_size": [3, 3, 3],
       "strides": [1, 2, 2], "upsample_kernel_size": [2, 2], "filters": [8, 16, 32], "norm_name": "instance"}


def _config(extra=()):
    return {
        "bundle_root": ".",
        "network_def": NET,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.2, 1.2, 2.5], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -200, "a_max": 300, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            *extra,
            {"_target_": "EnsureTyped", "keys": "image"}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16], "sw_batch_size": 2,
                    "overlap": 0.5, "mode": "gaussian"},
        # as MONAI's bundles: softmax, the preprocessing inverted on the probabilities, argmax
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]},
    }


def _parsed(bundle):
    from monai.bundle import ConfigParser
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return [parser.get_parsed_content(k) for k in ("network_def", "preprocessing", "inferer", "postprocessing")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(bundle folder, task folder): a DynUNet bundle with random weights whose head is centred
    on one case, so that its map has classes and boundaries to agree on."""
    root = tmp_path_factory.mktemp("bundle")
    task = make_task(root / "task", kind="ct", cases=1, test_cases=2, seed=5, size=(40, 48))
    b = root / "spleenish"
    (b / "configs").mkdir(parents=True)
    (b / "models").mkdir()
    (b / "configs" / "inference.json").write_text(json.dumps(_config()))
    (b / "configs" / "metadata.json").write_text(json.dumps({"network_data_format": {
        "inputs": {"image": {"num_channels": 1}},
        "outputs": {"pred": {"num_channels": 3, "channel_def": {"0": "background", "1": "organ", "2": "lesion"}}}}}))
    torch.manual_seed(0)
    net, pre, inferer, _ = _parsed(b)
    net.eval()
    with torch.no_grad():
        logits = inferer(pre({"image": str(task / "imagesTr" / "synthct_000.nii.gz")})["image"][None], net)
        net.output_block.conv.conv.bias.sub_(torch.as_tensor(logits).mean((0, 2, 3, 4)))
    torch.save(net.state_dict(), b / "models" / "model.pt")
    return b, task


def test_the_attacked_function_is_the_bundles_own_inference_on_the_perturbed_scan(bundle, tmp_path):
    import nibabel as nib
    import numpy as np
    from rog.external.bundle import load_bundle
    from rog.infer.sliding_window import SlidingWindow
    b, task = bundle
    model = load_bundle(b)
    assert model.class_names == ["organ", "lesion"] and model.probabilities
    net, pre, inferer, post = _parsed(b)
    net.load_state_dict(torch.load(b / "models" / "model.pt", weights_only=True))
    net.eval()
    cases = model.load_cases(task / "imagesTs", task / "labelsTs")
    assert len(cases) == 2
    ours = SlidingWindow(model.network, model.patch, **model.window)
    rng = np.random.default_rng(0)
    for case in cases:
        scan = nib.load(task / "imagesTs" / f"{case.name}.nii.gz")
        assert np.array_equal(case.x[0, 0].numpy(), np.asarray(scan.dataobj, np.float32))  # the scan as stored
        span = case.hi - case.lo
        noise = torch.from_numpy(rng.choice([-8 / 255, 8 / 255], size=case.x.shape)).float()
        for tag, x in (("clean", case.x), ("8/255", torch.minimum(torch.maximum(case.x + noise * span, case.lo),
                                                                  case.hi))):
            written = tmp_path / f"{case.name}.nii.gz"
            nib.save(nib.Nifti1Image(x[0, 0].numpy(), scan.affine, scan.header), written)
            with torch.no_grad():  # the bundle's whole inference on the written file, as deployed
                d = pre({"image": str(written)})
                d["pred"] = inferer(d["image"][None], net)[0]
                reference = post(d)["pred"].argmax(0) if post(d)["pred"].shape[0] > 1 else post(d)["pred"][0]
                mine = case.around(ours)(x)
            assert mine.shape[2:] == reference.shape == case.y.shape[1:]
            assert (torch.bincount(reference.flatten().long(), minlength=3) / reference.numel() > 0.01).sum() >= 2
            agreement = float((mine.argmax(1)[0] == reference).float().mean())
            print(f"bundle agreement {case.name} {tag}: {agreement:.5f} of {reference.numel()} voxels")  # benchmarks.md
            assert agreement >= 0.999


def test_the_bundle_pipelines_input_gradient_is_its_finite_difference(bundle):
    from rog.external.bundle import load_bundle
    b, task = bundle
    model = load_bundle(b)
    (case,) = model.load_cases(task / "imagesTs", task / "labelsTs", max_cases=1)
    torch.manual_seed(0)
    f = case.around(torch.nn.Conv3d(1, 3, 3, padding=1))  # a smooth stand-in for the network
    x = case.x.clone().requires_grad_(True)
    weight = torch.randn(f(x).shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad((f(x).double() * weight).sum(), x)
    assert grad.abs().sum() > 0
    # directions on voxels whose every neighbour lies well inside ScaleIntensityRange's window
    # [-200, 300], so no resampled value crosses its clip: there the function is smooth
    pool = torch.nn.functional.max_pool3d
    calm = (pool(case.x, 3, 1, 1) < 250) & (-pool(-case.x, 3, 1, 1) > -150)
    assert calm.float().mean() > 0.05
    for _ in range(3):
        d = torch.randn(x.shape) * calm
        with torch.no_grad():  # a central difference of 2 HU, summed in float64
            numeric = ((f(x + 2 * d) - f(x - 2 * d)).double() * weight).sum() / 4
        assert float(numeric) == pytest.approx(float((grad.double() * d).sum()), rel=1e-3)


def test_attack_on_a_bundle_lowers_dice_inside_the_raw_ball(bundle, tmp_path):
    b, task = bundle
    out = tmp_path / "att"
    code = main(["attack", "--bundle", str(b), "--images", str(task / "imagesTs"), "--labels",
                 str(task / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "2", "-o", str(out),
                 "--save-volumes"])
    doc = json.loads((out / "results.json").read_text())
    # the toy bundle's clean Dice is low (tau 0.06): its large-eps check may fail, and says so in the exit code
    assert code == (1 if any(c["status"] == "fail" for c in doc["checks"]) else 0)
    recs = doc["records"]
    assert doc["meta"]["model"]["model"] == "MONAI bundle spleenish" and doc["meta"]["class_names"] == ["organ", "lesion"]
    assert len(recs) == 2 and all(r["in_ball"] and r["in_box"] for r in recs)
    assert any(r["dice"] < doc["clean"][r["case"]]["dice"] for r in recs)
    # --save-volumes: the worst attacked scan on the scan's own grid, inside the ball and box
    import nibabel as nib
    import numpy as np
    for r in recs:
        scan = nib.load(task / "imagesTs" / f"{r['case']}.nii.gz")
        adv = nib.load(out / "volumes" / r["case"] / "eps8.0.nii.gz")
        assert adv.shape == scan.shape and np.allclose(adv.affine, scan.affine, atol=1e-4)
        x, a = np.asarray(scan.dataobj, np.float32), np.asarray(adv.dataobj)
        span = x.max() - x.min()
        assert 0 < np.abs(a - x).max() <= 8 / 255 * span * (1 + 1e-5)
        assert a.min() >= x.min() - 1e-5 * span and a.max() <= x.max() + 1e-5 * span


def test_bad_bundles_are_named_in_one_line(bundle, tmp_path, capsys):
    b, task = bundle
    bad = tmp_path / "bad"
    (bad / "configs").mkdir(parents=True)
    (bad / "models").mkdir()
    (bad / "models" / "model.pt").write_bytes((b / "models" / "model.pt").read_bytes())
    (bad / "configs" / "inference.json").write_text(json.dumps(_config([{"_target_": "RandFlipd", "keys": "image",
                                                                         "prob": 0.5}])))
    for folder, expected in ((task, "not a MONAI bundle"), (bad, "RandFlipd is not supported")):
        code = main(["attack", "--bundle", str(folder), "--images", str(task / "imagesTs"), "--labels",
                     str(task / "labelsTs"), "--eps", "8", "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_probabilities_are_inverted_where_the_bundle_inverts_after_a_softmax():
    from monai.transforms import Activations, Activationsd, Compose, Identity, Invertd
    from rog.external.bundle import _inverts_probabilities
    invert = Invertd(keys="pred", transform=Compose([Identity()]), orig_keys="image")
    assert _inverts_probabilities(Compose([Activationsd(keys="pred", softmax=True), invert]))
    assert _inverts_probabilities(Compose([Activations(softmax=True), invert]))  # the array transform too
    assert not _inverts_probabilities(Compose([invert, Activationsd(keys="pred", softmax=True)]))  # logits inverted
    assert not _inverts_probabilities(Compose([Activationsd(keys="pred", sigmoid=True), invert]))
    assert not _inverts_probabilities(None)
