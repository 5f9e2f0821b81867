import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from rog.checkpoint import load_checkpoint
from rog.errors import UsageError
from rog.models import ROG
from rog.train.adversarial import FreeAT
from rog.train.data import TrainPatches, make_splits
from rog.train.trainer import TrainConfig, Trainer
from tests.conftest import log_rows


def test_training_writes_log_curves_and_checkpoints(prepared, tmp_path, capsys):
    wd, plan = prepared
    cfg = TrainConfig(epochs=2, iterations=2, batch_size=2, device="cpu")
    result = Trainer(plan, wd.preprocessed, tmp_path / "run", cfg, progress=True).fit()
    # one progress bar for the whole run (its ETA is the run's): 2 epochs x 2 batches
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("train: 100%") and "4/4" in line and "epoch=2/2" in line for line in bar), bar
    run = tmp_path / "run"
    assert result["epochs"] == 2 and [r["epoch"] for r in log_rows(run)] == ["1", "2"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = json.loads((run / "splits.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"]) and len(split["val"]) >= 1
    state = load_checkpoint(run / "checkpoint_last.pt")
    assert state["epoch"] == 2 and "optimizer" in state and "scheduler" in state
    assert load_checkpoint(run / "checkpoint_best.pt")["model"].keys() == state["model"].keys()


def test_a_training_that_never_predicts_the_foreground_is_called_failed(prepared, tmp_path, capsys, monkeypatch):
    wd, plan = prepared
    cfg = TrainConfig(epochs=2, iterations=1, batch_size=2, device="cpu")
    Trainer(plan, wd.preprocessed, tmp_path / "ok", cfg, progress=False).fit()
    assert "failed training" not in capsys.readouterr().out
    monkeypatch.setattr(Trainer, "_validate", lambda self, val: (1.0, 0.0))  # background everywhere
    Trainer(plan, wd.preprocessed, tmp_path / "dead", cfg, progress=False).fit()
    out = capsys.readouterr().out
    assert "validation Dice 0 in all 2 epoch(s)" in out and "failed training" in out


def test_sampling_is_reproducible_and_sharded(prepared):
    wd, plan = prepared
    cases = sorted(p.name[:-8] for p in wd.preprocessed.glob("*_seg.npy"))
    a = TrainPatches(wd.preprocessed, cases, plan.crop_size, plan.patch_size, 8, seed=1)
    b = TrainPatches(wd.preprocessed, cases, plan.crop_size, plan.patch_size, 8, seed=1)
    for i in (0, 5):
        xa, ya, sa = a[i]
        xb, yb, sb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and list(xa.shape[1:]) == plan.patch_size
        assert torch.equal(sa, sb) and sa.shape == (2, plan.num_channels) and (sa[1] > sa[0]).all()
    r0 = TrainPatches(wd.preprocessed, cases, plan.crop_size, plan.patch_size, 8, seed=1, rank=0, world=2)
    r1 = TrainPatches(wd.preprocessed, cases, plan.crop_size, plan.patch_size, 8, seed=1, rank=1, world=2)
    assert len(r0) == len(r1) == 4
    assert torch.equal(r1[0][0], a[1][0]) and torch.equal(r0[1][0], a[2][0])  # disjoint interleave
    splits = make_splits([f"c{i}" for i in range(10)], 5, seed=0)
    assert sorted(c for s in splits for c in s["val"]) == sorted(f"c{i}" for i in range(10))


def _training_step(model, opt, seen: list):
    """A Free AT `train_step` (CE, one optimiser step) that records the inputs it was given."""
    def step(x_in, t):
        seen.append(x_in.detach().clone())
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_in), t)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def test_free_at_perturbation_is_nonzero_and_bounded():
    torch.manual_seed(0)
    model = ROG(1, 3, (1, 1, 2), width=4)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(2, 1, 16, 16, 16) * 0.5  # z-scored-like: range about 4, where // 2 gave 0
    y = torch.randint(0, 3, (2, 16, 16, 16))
    seen = []
    step = _training_step(model, opt, seen)
    free = FreeAT(eps=8, replays=3)
    lo, hi = x.amin((2, 3, 4), keepdim=True), x.amax((2, 3, 4), keepdim=True)
    free.step(x, y, lo.flatten(1), hi.flatten(1), step)
    eps_abs = 8 / 255 * (hi - lo)
    assert free.delta.abs().max() > 0
    assert (free.delta.abs() <= eps_abs + 1e-7).all()
    assert torch.equal(seen[0], x)  # first replay starts from the zero buffer
    for s in seen[1:]:
        d = (s - x).abs()
        assert d.max() > 0.5 * eps_abs.min() and (d <= eps_abs + 1e-6).all()
    assert free.last_ratio > 0.5
    free.step(x, y, lo.flatten(1), hi.flatten(1), step)  # the buffer is carried to the next minibatch
    assert not torch.equal(seen[3], x)


def test_adversarial_training_radius_is_the_whole_cases_not_the_patchs():
    """A patch spanning half its case's range is perturbed by eps/255 of the case's range (the
    benchmark's radius), twice what its own range gives; the clean patch stays inside the box."""
    from rog.train.adversarial import pgd_examples
    torch.manual_seed(0)
    model = ROG(1, 3, (1, 1, 2), width=4)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1  # patch range about [-1, 1]
    y = torch.randint(0, 3, (2, 16, 16, 16))
    case_lo, case_hi = torch.full((2, 1), -3.0), torch.full((2, 1), 1.0)  # case range 4 = 2x the patch's
    case_radius = 8 / 255 * 4.0
    free = FreeAT(eps=8, replays=3)
    free.step(x, y, case_lo, case_hi, _training_step(model, opt, []))
    assert free.delta.abs().max() == pytest.approx(case_radius, rel=1e-5)  # not 8/255 * 2
    x_adv = pgd_examples(model, x, y, case_lo, case_hi, 8, 3, seed=0)
    d = (x_adv - x).abs().max().item()
    assert 8 / 255 * 2.0 * 1.05 < d <= case_radius + 1e-6
    assert x_adv.min() >= -3.0 - 1e-6 and x_adv.max() <= 1.0 + 1e-6


def test_free_at_buffer_survives_an_overflowed_fp16_step():
    # GradScaler's overflow step: the input gradient holds inf and NaN; the buffer stays finite
    x, y = torch.rand(1, 1, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long)
    lo, hi = torch.zeros(1, 1), torch.ones(1, 1)

    def overflowed(x_in, _y):
        g = torch.ones_like(x_in)
        g[0, 0, 0] = float("nan")
        g[0, 0, 1] = float("inf")
        x_in.grad = g
        return torch.tensor(1.0)

    free = FreeAT(eps=8, replays=2)
    free.step(x, y, lo, hi, overflowed)
    assert bool(torch.isfinite(free.delta).all())
    assert (free.delta[0, 0, 0] == 0).all() and torch.allclose(free.delta[0, 0, 1:], torch.tensor(8 / 255))


def test_free_at_training_logs_a_real_perturbation(prepared, tmp_path):
    wd, plan = prepared
    cfg = TrainConfig(epochs=2, iterations=2, batch_size=2, device="cpu", adv="free", replays=2)
    Trainer(plan, wd.preprocessed, tmp_path / "free", cfg, progress=False).fit()
    rows = log_rows(tmp_path / "free")
    assert len(rows) == 1  # epochs divided by m = 2
    assert float(rows[0]["adv_ratio"]) > 0.5


def test_resume_after_kill_minus_9_and_checkpoints_never_corrupt(ct_task, prepared, tmp_path):
    wd, plan = prepared
    run_root = tmp_path / "w"  # a work directory reusing the preprocessed cases and the plan
    run_root.mkdir()
    os.symlink(wd.preprocessed, run_root / "preprocessed")
    plan.save(run_root / "plan.json")
    cmd = [sys.executable, "-m", "rog", "train", str(ct_task), "-w", str(run_root), "--width", "4",
           "--iterations", "3", "--batch-size", "2", "--save-every", "1", "--device", "cpu",
           "--no-postprocessing"]
    proc = subprocess.Popen(cmd + ["--epochs", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_root / "runs" / "rog" / "checkpoint_last.pt"
    loads, deadline = 0, time.time() + 120
    try:
        while time.time() < deadline:
            if ckpt.is_file():
                state = load_checkpoint(ckpt)  # must never be torn, whenever we look
                loads += 1
                if state["epoch"] >= 1 and state["iteration"] >= 1:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert loads > 0
    killed_at = load_checkpoint(ckpt)
    assert killed_at["epoch"] >= 1
    done = subprocess.run(cmd + ["--epochs", str(killed_at["epoch"] + 2), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = log_rows(run_root / "runs" / "rog")
    assert [int(r["epoch"]) for r in rows] == list(range(1, killed_at["epoch"] + 3))
    assert load_checkpoint(ckpt)["epoch"] == killed_at["epoch"] + 2
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, data_dir, run_dir, plan_path, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from rog.plan import Plan
    plan = Plan.load(plan_path)
    trainer = Trainer(plan, data_dir, run_dir, TrainConfig(epochs=1, iterations=2, batch_size=4, device="cpu",
                                                           seed=rank), progress=False)
    trainer.fit()
    torch.save(trainer.model.state_dict(), f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_keep_identical_weights(prepared, tmp_path):
    wd, plan = prepared
    plan.save(tmp_path / "plan.json")
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(wd.preprocessed), str(tmp_path / "run"),
                                str(tmp_path / "plan.json"), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = ROG(1, plan.num_classes, plan.strides, width=plan.width).state_dict()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(not torch.equal(w0[k], init[k]) for k in w0)  # they did train
    assert (tmp_path / "run" / "checkpoint_last.pt").is_file()  # written once, by rank 0


def test_pgd_adversarial_training_runs_and_changes_the_inputs(prepared, tmp_path, monkeypatch):
    import rog.train.defences as defences_module
    wd, plan = prepared
    seen = []
    original = defences_module.pgd_examples

    def spy(model, x, y, case_lo, case_hi, eps, steps, seed):
        x_adv = original(model, x, y, case_lo, case_hi, eps, steps, seed)
        seen.append(((x - x_adv).abs().amax((2, 3, 4)) / (case_hi - case_lo)).max().item())
        return x_adv

    monkeypatch.setattr(defences_module, "pgd_examples", spy)
    cfg = TrainConfig(epochs=1, iterations=2, batch_size=2, device="cpu", adv="pgd", pgd_steps=2)
    Trainer(plan, wd.preprocessed, tmp_path / "pgd", cfg, progress=False).fit()
    assert len(seen) == 2 and all(0 < d <= 8 / 255 + 1e-6 for d in seen)  # the case's radius


def test_a_split_file_is_honoured_recorded_and_checked(ct_task, prepared, tmp_path, capsys):
    from rog.cli import main
    from rog.data.preprocess import labelled_cases
    from rog.train.data import SplitError, read_split
    wd, plan = prepared
    cases = labelled_cases(wd.preprocessed)
    mine = {"train": cases[1:], "val": cases[:1]}
    (tmp_path / "split.json").write_text(json.dumps(mine))
    cfg = TrainConfig(epochs=1, iterations=1, batch_size=2, device="cpu", split=str(tmp_path / "split.json"))
    Trainer(plan, wd.preprocessed, tmp_path / "run", cfg, progress=False).fit()
    recorded = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert recorded["train"] == sorted(mine["train"]) and recorded["val"] == mine["val"]
    assert recorded["from"] == str(tmp_path / "split.json")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["split"] == str(tmp_path / "split.json")
    # nnU-Net's splits_final.json: a list of folds, --fold picks one
    (tmp_path / "nnunet.json").write_text(json.dumps([mine, {"train": cases[:-1], "val": cases[-1:]}]))
    assert read_split(tmp_path / "nnunet.json", 1, cases)["val"] == cases[-1:]
    for bad, why in (({"train": cases, "val": cases[:1]}, "in both train and val"),
                     ({"train": ["nope"], "val": cases[:1]}, r"\['nope'\] are not labelled"),
                     ({"train": cases[1:]}, "non-empty 'train' and 'val'")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(SplitError, match=why):
            read_split(tmp_path / "bad.json", 0, cases)
    with pytest.raises(SplitError, match="no fold 2"):
        read_split(tmp_path / "nnunet.json", 2, cases)
    # a run folder prepared with only a splits.json (nnU-Net's habit) is trained on that split
    run = wd.root / "runs" / "prepared"
    run.mkdir(parents=True)
    (run / "splits.json").write_text(json.dumps({**mine, "test": []}))
    quick = ["-w", str(wd.root), "--epochs", "1", "--iterations-per-epoch", "1", "--batch-size", "2", "--device", "cpu",
             "--no-postprocessing"]
    assert main(["train", str(ct_task), "--name", "prepared", *quick]) == 0
    assert json.loads((run / "splits.json").read_text())["val"] == mine["val"] and (run / "checkpoint_last.pt").is_file()
    # a malformed split file: one line naming it, no run written
    (tmp_path / "bad.json").write_text("{")
    capsys.readouterr()
    assert main(["train", str(ct_task), "--name", "badsplit", "--split", str(tmp_path / "bad.json"), *quick]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rog train: error: ") and "bad.json: invalid JSON" in last
    assert not (wd.root / "runs" / "badsplit" / "config.json").exists()


def test_a_fine_tuned_run_inherits_its_initial_runs_split(prepared, tmp_path, capsys):
    # another seed would draw another split, moving cases that trained the initial weights into
    # validation or the held-out cases that `rog attack` benchmarks: the split is inherited
    from rog.data.preprocess import labelled_cases
    wd, plan = prepared
    quick = dict(epochs=1, iterations=1, batch_size=2, device="cpu")
    Trainer(plan, wd.preprocessed, tmp_path / "init", TrainConfig(seed=0, **quick), progress=False).fit()
    initial = json.loads((tmp_path / "init" / "splits.json").read_text())
    cases = labelled_cases(wd.preprocessed)
    # a seed whose own split would validate or hold out a case that trained the initial weights
    seed = next(s for s in range(1, 20) if set(initial["train"]) & set(
        (d := make_splits(cases, min(5, len(cases) - len(initial["test"])), s, len(initial["test"]))[0])["val"]
        + d["test"]))
    cfg = TrainConfig(seed=seed, adv="free", replays=2, init_from=str(tmp_path / "init"), **quick)
    Trainer(plan, wd.preprocessed, tmp_path / "free", cfg, progress=False).fit()
    tuned = json.loads((tmp_path / "free" / "splits.json").read_text())
    assert {k: tuned[k] for k in ("train", "val", "test")} == {k: initial[k] for k in ("train", "val", "test")}
    assert tuned["init_from"] == str(tmp_path / "init")
    # a split file that validates a case the initial weights trained on is refused by name
    (tmp_path / "split.json").write_text(json.dumps({"train": initial["val"], "val": initial["train"][:1]}))
    with pytest.raises(UsageError, match="1 case\\(s\\) that trained the --init-from weights would be validated"):
        Trainer(plan, wd.preprocessed, tmp_path / "leak", TrainConfig(split=str(tmp_path / "split.json"),
                init_from=str(tmp_path / "init"), **quick), progress=False).fit()
