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
    }


def _parsed(bundle):
    from monai.bundle import ConfigParser
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return [parser.get_parsed_content(k) for k in ("network_def", "preprocessing", "inferer")]


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
    net, pre, inferer = _parsed(b)
    net.eval()
    with torch.no_grad():
        logits = inferer(pre({"image": str(task / "imagesTr" / "synthct_000.nii.gz")})["image"][None], net)
        net.output_block.conv.conv.bias.sub_(torch.as_tensor(logits).mean((0, 2, 3, 4)))
    torch.save(net.state_dict(), b / "models" / "model.pt")
    return b, task


def test_clean_prediction_agrees_with_the_bundles_own_inference(bundle):
    from rog.external.bundle import load_bundle
    from rog.infer.sliding_window import SlidingWindow
    b, task = bundle
    model = load_bundle(b)
    assert model.class_names == ["organ", "lesion"] and model.spacing == [1.2, 1.2, 2.5]
    net, pre, inferer = _parsed(b)
    net.load_state_dict(torch.load(b / "models" / "model.pt", weights_only=True))
    net.eval()
    cases = model.load_cases(task / "imagesTs", task / "labelsTs")
    assert len(cases) == 2
    ours = SlidingWindow(model.network, model.patch, **model.window)
    for case in cases:
        with torch.no_grad():
            reference = inferer(pre({"image": str(task / "imagesTs" / f"{case.name}.nii.gz")})["image"][None],
                                net).argmax(1)
            mine = case.around(ours)(case.x).argmax(1)
        assert mine.shape == reference.shape == case.y.shape
        assert (torch.bincount(reference.flatten(), minlength=3) / reference.numel() > 0.01).sum() >= 2
        agreement = float((mine == reference).float().mean())
        print(f"bundle agreement {case.name}: {agreement:.5f} of {reference.numel()} voxels")  # docs/benchmarks.md
        assert agreement >= 0.999
        # raw Hounsfield units outside, the bundle's [0, 1] scaling inside the model
        scaled = case.around(torch.nn.Identity())(case.x)
        assert case.lo.min() < -500 and 0 <= scaled.min() and scaled.max() <= 1


def test_attack_on_a_bundle_lowers_dice_inside_the_raw_ball(bundle, tmp_path):
    b, task = bundle
    out = tmp_path / "att"
    code = main(["attack", "--bundle", str(b), "--images", str(task / "imagesTs"), "--labels",
                 str(task / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "2", "-o", str(out)])
    doc = json.loads((out / "results.json").read_text())
    # the toy bundle's clean Dice is low (tau 0.06): its large-eps check may fail, and says so in the exit code
    assert code == (1 if any(c["status"] == "fail" for c in doc["checks"]) else 0)
    recs = doc["records"]
    assert doc["meta"]["model"]["model"] == "MONAI bundle spleenish" and doc["meta"]["class_names"] == ["organ", "lesion"]
    assert len(recs) == 2 and all(r["in_ball"] and r["in_box"] for r in recs)
    assert any(r["dice"] < doc["clean"][r["case"]]["dice"] for r in recs)


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
