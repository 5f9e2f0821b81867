"""Bad input in every command: one line naming the file or argument, a non-zero exit, no
traceback, and no finished file changed. Each test breaks a copy of a small synthetic task."""
import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from rog.cli import main
from rog.data.io import read_label, write_volume


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def task(ct_task, tmp_path):
    return shutil.copytree(ct_task, tmp_path / "task")


def _image(task, i=1):
    return task / "imagesTr" / f"synthct_{i:03d}.nii.gz"


def _label(task, i=1):
    return task / "labelsTr" / f"synthct_{i:03d}.nii.gz"


def _rewrite(path, fn, dtype=None):
    img = nib.load(str(path))
    data = fn(np.asarray(img.dataobj))
    write_volume(path, data.astype(dtype or data.dtype), img.affine)


BREAKS = {
    "missing image": (_image, lambda f: f.unlink(), "file not found"),
    "truncated image": (_image, lambda f: f.write_bytes(f.read_bytes()[:300]), "unreadable"),
    "2D image": (_image, lambda f: _rewrite(f, lambda a: a[:, :, 0]), "3D or 4D"),
    "label of 0.5": (_label, lambda f: _rewrite(f, lambda a: a + 0.5, np.float32), "non-integer"),
    "NaN voxels": (_image, lambda f: _rewrite(f, lambda a: np.where(a > 100, np.nan, a).astype(np.float32)), "NaN"),
    "undeclared label": (_label, lambda f: _rewrite(f, lambda a: np.where(a == 2, 7, a)), "not declared"),
    "two channels for one modality": (_image, lambda f: _rewrite(f, lambda a: np.stack([a, a], -1)), "channel"),
    "label shape": (_label, lambda f: _rewrite(f, lambda a: a[:-2]), "shape"),
    "label affine": (_label, lambda f: write_volume(f, np.asarray(nib.load(str(f)).dataobj),
                                                    nib.load(str(f)).affine + np.diag([0, 0, 0.5, 0]) * 2), "affine"),
}


@pytest.mark.parametrize("what", list(BREAKS))
def test_plan_names_the_file_of_a_broken_case(task, tmp_path, capsys, what):
    where, breaks, words = BREAKS[what]
    broken = where(task)
    breaks(broken)
    code, _, err = _run(capsys, "plan", task, "-w", tmp_path / "w", "--workers", 2)
    assert code == 2 and str(broken) in err and words in err, err
    assert not (tmp_path / "w" / "plan.json").exists()


@pytest.mark.parametrize("what", ["truncated image", "NaN voxels", "label shape"])
def test_preprocess_stops_on_a_broken_case_and_keeps_the_finished_ones(task, tmp_path, capsys, what):
    wd = tmp_path / "w"
    assert _run(capsys, "preprocess", task, "-w", wd, "--workers", 2)[0] == 0
    before = _snapshot(wd)
    where, breaks, words = BREAKS[what]
    broken = where(task)
    breaks(broken)
    (wd / "preprocessed" / "synthct_001.json").unlink()  # the case is to be done again
    code, _, err = _run(capsys, "preprocess", task, "-w", wd, "--workers", 2)
    assert code == 2 and str(broken) in err and words in err, err
    after = _snapshot(wd)
    assert {k: v for k, v in before.items() if "synthct_001" not in str(k)} == \
           {k: v for k, v in after.items() if "synthct_001" not in str(k)}
    assert not (wd / "preprocessed" / "synthct_001.json").exists()  # not taken as done


def test_empty_training_set_is_named(tmp_path, capsys):
    from rog.data.synthetic import make_task
    task = make_task(tmp_path / "nn", cases=2, test_cases=0, size=(20, 24), layout="nnunet")
    for f in (task / "imagesTr").iterdir():
        f.unlink()
    code, _, err = _run(capsys, "plan", task, "-w", tmp_path / "w")
    assert code == 2 and "training list is empty" in err and str(task / "dataset.json") in err


def test_the_same_image_stored_in_another_axis_order_gets_the_same_prediction(ct_task, tmp_path, capsys):
    src = ct_task / "imagesTs" / "synthct_004.nii.gz"
    img = nib.load(str(src))
    data = np.asarray(img.dataobj)
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(src, inp / "usual.nii.gz")
    # z first: the array transposed and the affine's columns permuted, so every voxel keeps
    # its place in the world
    perm = (2, 0, 1)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, list(perm)]
    write_volume(inp / "zfirst.nii.gz", data.transpose(perm), affine)
    wd = tmp_path / "w"
    assert _run(capsys, "plan", ct_task, "-w", wd, "--width", 4)[0] == 0
    code, _, err = _run(capsys, "predict", "--model", "rog", "--plan", wd / "plan.json", "-i", inp, "-o",
                        tmp_path / "out", "--postprocess", "off", "--device", "cpu")
    assert code == 0, err
    usual, ug = read_label(tmp_path / "out" / "usual.nii.gz")
    zfirst, zg = read_label(tmp_path / "out" / "zfirst.nii.gz")
    assert zg.shape == data.transpose(perm).shape and np.allclose(zg.affine, affine)  # its own grid
    back = zfirst.transpose(np.argsort(perm))
    assert (back == usual).mean() >= 0.99 and usual.any()


def _train(capsys, task, wd, *extra):
    return _run(capsys, "train", task, "-w", wd, "--name", "r", "--width", 4, "--epochs", 2, "--iterations", 1,
                "--batch-size", 1, "--device", "cpu", "--no-postprocessing", *extra)


def test_an_existing_run_is_never_overwritten_and_resume_keeps_its_config(task, tmp_path, capsys):
    wd = tmp_path / "w"
    code, out, _ = _train(capsys, task, wd)
    run = wd / "runs" / "r"
    # nnU-Net's habits: a line per epoch with its validation Dice, and the run folder at the end
    assert code == 0 and "epoch 1/2: train loss" in out and "epoch 2/2:" in out and ", Dice " in out
    assert f"run folder {run}" in out
    before = _snapshot(run)
    code, _, err = _run(capsys, "train", task, "-w", wd, "--name", "r", "--device", "cpu")
    assert code == 2 and str(run) in err and "--resume" in err
    assert _snapshot(run) == before
    # --resume with the CLI's defaults (1000 epochs): the run's own 2 epochs hold; it is done
    code, _, err = _run(capsys, "train", task, "-w", wd, "--name", "r", "--resume", "--device", "cpu",
                        "--no-postprocessing")
    assert code == 0 and json.loads((run / "config.json").read_text())["epochs"] == 2
    assert len((run / "log.csv").read_text().splitlines()) == 3  # header + the run's 2 epochs
    (run / "postprocessing.json").write_text("{}")  # a stale decision must not survive a new run
    assert _train(capsys, task, wd, "--overwrite")[0] == 0 and not (run / "postprocessing.json").exists()
    code, _, err = _run(capsys, "train", task, "-w", wd, "--name", "fresh", "--resume", "--device", "cpu")
    assert code == 2 and "nothing to resume" in err


@pytest.mark.parametrize("argv,words", [
    (["--eps", "-8"], "argument --eps: -8 must be > 0"),
    (["--iters", "0"], "argument --iters: 0 must be >= 1"),
    (["--iters", "-3"], "argument --iters: -3 must be >= 1"),
    (["--queries", "0"], "argument --queries: 0 must be >= 1"),
])
def test_attack_arguments_are_checked_before_anything_runs(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        main(["attack", str(tmp_path / "run"), *argv])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_an_eps_beyond_the_scale_of_its_unit_is_refused_before_anything_runs(tmp_path, capsys):
    # the range of --eps is its unit's: (0, 255] on the /255 scale, any positive number of HU
    code, _, err = _run(capsys, "attack", tmp_path / "run", "--eps", "300")
    assert code == 2 and "eps (--eps) [300.0]: each must be in (0, 255] (the /255 scale)" in err
    code, _, err = _run(capsys, "attack", tmp_path / "run", "--eps", "300", "--eps-unit", "hu")
    assert code == 2 and "run directory not found" in err  # 300 HU is a radius: the next problem is named


def test_attack_names_unknown_attacks_missing_runs_and_mixed_results(ct_task, tmp_path, capsys):
    from rog.pipeline.stages import run_preprocessing
    wd, plan, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    plan.width = 4
    plan.save(tmp_path / "plan.json")
    common = ["attack", "--model", "rog", "--plan", tmp_path / "plan.json", "--data", wd.preprocessed,
              "--device", "cpu", "--iters", "1", "-o", tmp_path / "att"]
    code, _, err = _run(capsys, *common, "--attacks", "apgd-xx")
    assert code == 2 and "unknown attack 'apgd-xx'" in err
    code, _, err = _run(capsys, "attack", tmp_path / "no_such_run")
    assert code == 2 and "no_such_run: run directory not found" in err
    code, _, err = _run(capsys, *common, "--attacks", "pgd", "--eps", "0.03")
    assert code == 0 and "/255 scale" in err
    results = tmp_path / "att" / "results.json"
    assert json.loads(results.read_text())["threat"]["eps"] == [0.03]
    before = results.read_bytes()
    code, _, err = _run(capsys, *common, "--attacks", "pgd", "--eps", "0.03", "--cases", "synthct_000")
    assert code == 2 and str(results) in err and "different case list" in err
    assert results.read_bytes() == before


def test_predict_and_evaluate_refuse_to_succeed_on_nothing(ct_task, tmp_path, capsys):
    from rog.pipeline.stages import ensure_plan
    from rog.data.dataset import load_dataset
    from rog.rundir import Workdir
    ds = load_dataset(ct_task)
    plan = ensure_plan(ds, Workdir(tmp_path / "w"))
    plan.width = 4
    plan.save(tmp_path / "plan.json")
    model = ["--model", "rog", "--plan", tmp_path / "plan.json", "--device", "cpu"]
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "predict", *model, "-i", tmp_path / "empty", "-o", tmp_path / "out")
    assert code == 2 and str(tmp_path / "empty") in err and "no image" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = _run(capsys, "predict", *model, "-i", ct_task / "imagesTs", "-o", blocker / "out")
    assert code == 2 and str(blocker / "out") in err and "cannot write" in err
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(ct_task / "labelsTr" / "synthct_000.nii.gz", preds)
    code, _, err = _run(capsys, "evaluate", ct_task / "labelsTr", preds)
    assert code == 1 and "no prediction for 3 reference(s)" in err and "synthct_001" in err


def test_small_things(tmp_path, capsys, monkeypatch):
    text = tmp_path / "weights.pt"
    text.write_text("not weights")
    from rog.checkpoint import CheckpointError, load_checkpoint
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(text)
    for argv, words in ((["plan", "x", "--width", "-3"], "--width: -3 must be >= 1"),
                        (["train", "x", "--epochs", "0"], "--epochs: 0 must be >= 1")):
        with pytest.raises(SystemExit):
            main(argv)
        assert words in capsys.readouterr().err
    code, _, err = _run(capsys, "synth", tmp_path / "s", "--size", "16", "20")
    assert code == 2 and "--size 16 20" in err and not (tmp_path / "s").exists()
    assert _run(capsys, "synth", tmp_path / "s", "--size", "20", "22", "--cases", "2", "--test-cases", "0")[0] == 0
    assert _run(capsys, "check", tmp_path / "s", "-q")[0] == 0

    import rog.cli.commands
    monkeypatch.setattr(rog.cli.commands, "cmd_check", lambda a: (_ for _ in ()).throw(KeyboardInterrupt()))
    code, _, err = _run(capsys, "check", tmp_path / "s")
    assert code == 130 and "interrupted" in err


def test_hd95_of_a_missed_class_is_penalised_and_counted():
    from rog.evaluate.metrics import case_metrics, hd95_penalty
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:5, 2:5, 2:5], ref[6:8, 6:8, 6:8] = 1, 2
    pred = np.where(ref == 2, 0, ref)  # class 2 missed entirely
    m = case_metrics(pred, ref, 3, (1.0, 1.0, 2.0))
    assert m["missed"] == [False, True] and m["dice"][1] == 0.0
    assert m["hd95"][1] == pytest.approx(hd95_penalty((10, 10, 10), (1, 1, 2))) == pytest.approx(600 ** 0.5)


def test_pool_workers_do_not_outlive_a_killed_parent(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from rog.pool import worker_pool\n"
        "pool = worker_pool(2)\n"
        "futures = [pool.submit(time.sleep, 60) for _ in range(2)]\n"
        "time.sleep(1.0)\n"
        "print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)  # as `kill -9` of a running `rog preprocess`
    parent.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is gone too
            return f.read().split()[2] != "Z"

    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)


def test_a_work_directory_keeps_to_its_dataset(tmp_path, capsys):
    """A work directory planned for one dataset refuses another (a reused demo folder), and
    `--spacing` takes one or three positive values."""
    from rog.data.synthetic import make_task
    ct = make_task(tmp_path / "ct", kind="ct", cases=2, test_cases=0, size=(24, 28))
    mri = make_task(tmp_path / "mri", kind="mri", cases=2, test_cases=0, size=(20, 24))
    work = tmp_path / "w"
    assert main(["plan", str(ct), "-w", str(work), "--width", "4", "--spacing", "2"]) == 0
    assert json.loads((work / "plan.json").read_text())["target_spacing"] == [2.0, 2.0, 2.0]
    plan = (work / "plan.json").read_bytes()
    capsys.readouterr()
    assert main(["preprocess", str(mri), "-w", str(work)]) == 2
    err = capsys.readouterr().err
    assert "the plan of dataset 'SynthCT', not 'SynthMRI'" in err and (work / "plan.json").read_bytes() == plan
    assert main(["plan", str(ct), "-w", str(tmp_path / "w2"), "--spacing", "1", "2"]) == 2
    assert "one or three positive millimetre values" in capsys.readouterr().err
