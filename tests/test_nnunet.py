"""nnU-Net v2 results folders as benchmark models: a folder built offline by nnU-Net's own
planner, a network from its plans saved in nnU-Net's checkpoint format."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rog.cli import main
from rog.data.synthetic import make_task

nnunetv2 = pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed (scripts/setup.sh --test installs it)")

PLAN = """
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
extract_fingerprints([1], check_dataset_integrity=True, num_processes=1, verbose=False)
plan_experiments([1])
"""


@pytest.fixture(scope="module")
def nnunet_model(tmp_path_factory):
    """(model folder, raw dataset folder) of a 3d_fullres nnU-Net model with random weights."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    root = tmp_path_factory.mktemp("nnunet")
    raw = make_task(root / "raw" / "Dataset001_Synth", kind="ct", cases=4, test_cases=2, seed=3, size=(40, 48),
                    layout="nnunet")
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "results")}
    subprocess.run([sys.executable, "-c", PLAN], env=env, check=True, capture_output=True)
    plans = json.loads((root / "pre" / "Dataset001_Synth" / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((raw / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    torch.manual_seed(0)
    net = nnUNetTrainer.build_network_architecture(pm, cm, 1, 3, enable_deep_supervision=False).eval()
    # random weights predict background almost everywhere; centring the head's logits on one
    # case spreads the classes, so that agreement is tested on a map with many boundaries
    from rog.external.nnunet import preprocess
    from rog.infer.sliding_window import SlidingWindow
    data, _, _, norm = preprocess(pm, cm, [raw / "imagesTr" / "synthct_000_0000.nii.gz"], None)
    with torch.no_grad():
        logits = SlidingWindow(net, cm.patch_size)(norm(torch.from_numpy(data)[None]))
        net.decoder.seg_layers[-1].bias -= logits.mean((0, 2, 3, 4))
    model_dir = root / "results" / "Dataset001_Synth" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model_dir / "fold_0").mkdir(parents=True)
    (model_dir / "plans.json").write_text(json.dumps(plans))
    (model_dir / "dataset.json").write_text(json.dumps(dataset_json))
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json,
                              "device": torch.device("cpu")},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 1},
               model_dir / "fold_0" / "checkpoint_final.pth")
    return model_dir, raw


def test_clean_prediction_agrees_with_nnunets_own_predictor(nnunet_model):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO  # noqa: F401 - the reader nnU-Net planned
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
        assert (mine == reference).mean() >= 0.999, (name, (mine == reference).mean())


def test_attack_lowers_dice_stays_in_the_raw_ball_and_resumes(nnunet_model, tmp_path, capsys):
    model_dir, raw = nnunet_model
    out = tmp_path / "att"
    args = ["attack", "--nnunet", str(model_dir), "--fold", "0", "--images", str(raw / "imagesTs"),
            "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iters", "2", "-o", str(out)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
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
    assert main(args) == 0  # resume: every record exists, nothing is recomputed
    assert json.loads((out / "results.json").read_text())["records"] == doc["records"]
    assert before  # the finished results were kept


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
