"""What `rog predict` keeps: probabilities equal to the softmax it used, ensembles that average
them, mirroring on by default, a record of what made the predictions, and resuming."""
import json

import numpy as np
import pytest
import torch

from rog.checkpoint import save_checkpoint
from rog.cli import main
from rog.data.io import read_label, write_volume
from rog.rundir import PredictionsDir, RunDir
from tests.test_predictor import Oracle, _identity_plan


def _run(path, spacing, scale: float) -> RunDir:
    """A run folder of the `Oracle` whose logits are multiplied by `scale` (a softmax temperature)."""
    run = RunDir(path)
    run.path.mkdir(parents=True)
    _identity_plan(spacing).save(run.plan)
    run.config.write_text(json.dumps({"model": "tests.test_predictor:oracle"}))
    model = Oracle()
    with torch.no_grad():
        model.scale.fill_(scale)
    save_checkpoint(run.checkpoint("best"), {"model": model.state_dict()})
    return run


@pytest.fixture
def case(tmp_path):
    """One image encoding its label as 100 * label, on an oblique, anisotropic grid; its label."""
    label = np.zeros((18, 20, 12), np.uint8)
    label[4:12, 5:15, 3:9] = 1
    label[6:9, 8:11, 4:7] = 2
    affine = np.array([[0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]], float)
    write_volume(tmp_path / "in" / "c0.nii.gz", 100.0 * label + 7.0, affine)
    return label, affine


def _softmax(label, scale):
    x = torch.from_numpy(100.0 * label.astype(np.float32) + 7.0)[None, None]
    with torch.no_grad():
        return torch.softmax(Oracle()(x)[0] * scale, 0).numpy()


def test_probabilities_are_the_softmax_and_two_runs_average_them(tmp_path, case, capsys):
    label, affine = case
    spacing = [0.9, 1.1, 2.5]  # the grid's own per world axis (x, y, z): no resampling, the softmax is exact
    a, b = _run(tmp_path / "a", spacing, 1.0), _run(tmp_path / "b", spacing, 0.02)
    common = ["-i", str(tmp_path / "in"), "--device", "cpu", "--save-probabilities", "--postprocess", "off"]
    assert main(["predict", str(a.path), "-o", str(tmp_path / "pa"), *common]) == 0
    assert "mirroring on" in capsys.readouterr().out  # nnU-Net's default
    probs, saved_affine = PredictionsDir(tmp_path / "pa").read_probabilities("c0")
    assert probs.shape == (3, *label.shape) and probs.dtype == np.float32
    np.testing.assert_allclose(saved_affine, affine)
    np.testing.assert_allclose(probs, _softmax(label, 1.0), atol=1e-6)
    pred, geom = read_label(tmp_path / "pa" / "c0.nii.gz")
    np.testing.assert_array_equal(pred, probs.argmax(0))
    np.testing.assert_allclose(geom.affine, affine, atol=1e-6)
    # an ensemble of the two runs: the mean of their probabilities, and its argmax
    assert main(["predict", str(a.path), str(b.path), "-o", str(tmp_path / "ab"), *common]) == 0
    mean, _ = PredictionsDir(tmp_path / "ab").read_probabilities("c0")
    np.testing.assert_allclose(mean, (_softmax(label, 1.0) + _softmax(label, 0.02)) / 2, atol=1e-6)
    assert not np.allclose(mean, probs, atol=1e-3)  # the second run counts
    np.testing.assert_array_equal(read_label(tmp_path / "ab" / "c0.nii.gz")[0], mean.argmax(0))
    record = json.loads((tmp_path / "ab" / "rog_predict.json").read_text())
    assert len(record["weights"]) == 2 and record["weights"][0] != record["weights"][1]
    assert record["mirror_axes"] == [0, 1, 2] and record["postprocessing"] is None


def test_probabilities_through_resampling_agree_with_the_label_map(tmp_path, case):
    label, _ = case
    run = _run(tmp_path / "a", [0.7, 0.8, 1.5], 1.0)  # resampled there and back
    assert main(["predict", str(run.path), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "p"), "--device", "cpu",
                 "--save_probabilities", "--disable_tta"]) == 0  # nnU-Net's spellings
    probs, _ = PredictionsDir(tmp_path / "p").read_probabilities("c0")
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    pred = read_label(tmp_path / "p" / "c0.nii.gz")[0]
    np.testing.assert_array_equal(pred, probs.argmax(0))
    # the same case without probabilities streams its classes: the same label map
    assert main(["predict", str(run.path), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "q"), "--device", "cpu",
                 "--disable-tta"]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "q" / "c0.nii.gz")[0], pred)
    assert np.mean(pred == label) > 0.95


def test_continue_keeps_finished_cases_and_refuses_other_settings(tmp_path, case, capsys):
    run = _run(tmp_path / "a", [0.9, 1.1, 2.5], 1.0)
    args = ["predict", str(run.path), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "p"), "--device", "cpu"]
    assert main(args) == 0
    done = (tmp_path / "p" / "c0.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--continue"]) == 0
    assert "1 kept from before" in capsys.readouterr().out
    assert (tmp_path / "p" / "c0.nii.gz").stat().st_mtime_ns == done
    assert main([*args, "--continue", "--disable-tta"]) == 2
    err = capsys.readouterr().err
    assert "rog_predict.json" in err and "mirror_axes" in err and err.count("\n") == 1
    assert (tmp_path / "p" / "c0.nii.gz").stat().st_mtime_ns == done


def test_evaluate_takes_the_reference_first_and_refuses_a_swapped_pair(tmp_path, case, capsys):
    label, affine = case
    run = _run(tmp_path / "a", [0.9, 1.1, 2.5], 1.0)
    assert main(["predict", str(run.path), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "p"),
                 "--device", "cpu"]) == 0
    refs = tmp_path / "refs"
    write_volume(refs / "c0.nii.gz", label, affine)
    capsys.readouterr()
    assert main(["evaluate", str(refs), str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "class1: Dice 1.0000" in out and "class2: Dice 1.0000" in out  # the plan's class names
    assert main(["evaluate", str(tmp_path / "p"), str(refs)]) == 2  # swapped: rog's predictions as references
    assert "holds rog's predictions" in capsys.readouterr().err
    # references without class 2, predictions with it: refused unless the classes are given
    write_volume(refs / "c0.nii.gz", np.minimum(label, 1), affine)
    assert main(["evaluate", str(refs), str(tmp_path / "p")]) == 2
    assert "label(s) [2] that no reference" in capsys.readouterr().err
    assert main(["evaluate", str(refs), str(tmp_path / "p"), "--classes", "3"]) == 0


def test_a_missing_device_is_one_line(tmp_path, case, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = _run(tmp_path / "a", [0.9, 1.1, 2.5], 1.0)
    assert main(["predict", str(run.path), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "p"),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda: CUDA is not available" in err


def test_smooth_predicts_the_vote_of_the_noisy_copies(tmp_path, case, capsys):
    # the Oracle labels a voxel by its nearest multiple of 100: under noise of sd sigma x the
    # range (200), a voxel at 100 l + 7 votes l with the Gaussian mass of its bin
    from scipy.stats import norm
    label, _ = case
    run = _run(tmp_path / "a", [0.9, 1.1, 2.5], 1.0)  # the image's own grid: the votes are written as they are
    args = ["predict", str(run.path), "-i", str(tmp_path / "in"), "--device", "cpu", "--save-probabilities",
            "--postprocess", "off", "--disable-tta", "--smooth", "0.25", "--samples", "20"]
    assert main([*args, "-o", str(tmp_path / "p")]) == 0
    assert "majority vote of 20 copies under noise of sd 0.25" in capsys.readouterr().out
    votes, _ = PredictionsDir(tmp_path / "p").read_probabilities("c0")
    np.testing.assert_allclose(votes * 20, np.round(votes * 20), atol=1e-4)  # shares of 20 votes
    np.testing.assert_allclose(votes.sum(0), 1, atol=1e-6)
    sd, edges = 50.0, np.array([-np.inf, 50, 150, np.inf])
    for lab in range(3):
        p = np.diff(norm.cdf((edges - (100 * lab + 7)) / sd))  # each class's share of the vote
        mean = votes[:, label == lab].mean(1)
        assert np.all(np.abs(mean - p) < 0.03), (lab, mean, p)
    pred = read_label(tmp_path / "p" / "c0.nii.gz")[0]
    np.testing.assert_array_equal(pred, votes.argmax(0))
    assert 0.7 < np.mean(pred == label) < 1  # the noise flips some voxels' majority, not most
    # drawn from a seed: the same votes again; and the record says how they were made
    assert main([*args, "-o", str(tmp_path / "q")]) == 0
    np.testing.assert_array_equal(PredictionsDir(tmp_path / "q").read_probabilities("c0")[0], votes)
    record = json.loads((tmp_path / "p" / "rog_predict.json").read_text())
    assert record["smooth"] == {"sigma": 0.25, "samples": 20, "seed": 0}


def test_a_model_planned_for_other_channels_is_warned_about_in_one_line(tmp_path, ct_task, capsys):
    from rog.plan import Plan
    run = _run(tmp_path / "t1", [1.0, 1.0, 1.0], 1.0)
    plan = Plan.load(run.plan)
    args = ["predict", str(run.path), "-i", str(ct_task), "--device", "cpu", "--disable-tta", "--postprocess", "off"]
    assert main([*args, "-o", str(tmp_path / "p")]) == 0 and "planned for" not in capsys.readouterr().out  # "ch0"
    plan.modalities = ["T1"]
    plan.save(run.plan)
    assert main([*args, "-o", str(tmp_path / "q")]) == 0  # it still predicts
    said = [line for line in capsys.readouterr().out.splitlines() if "planned for" in line]
    assert len(said) == 1 and "channels CT" in said[0] and "planned for T1" in said[0]
