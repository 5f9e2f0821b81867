import numpy as np
import pytest
import torch

from rog.data.synthetic import make_task


@pytest.fixture(scope="session")
def ct_task(tmp_path_factory):
    """A small synthetic CT-like task (MSD v1 layout): 4 training + 1 test case."""
    return make_task(tmp_path_factory.mktemp("data") / "SynthCT", kind="ct", cases=4, test_cases=1,
                     seed=3, size=(28, 40))


@pytest.fixture(scope="session")
def mri_task(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("data") / "SynthMRI", kind="mri", cases=3, test_cases=0,
                     seed=5, size=(24, 32))


@pytest.fixture(scope="session")
def prepared(ct_task, tmp_path_factory):
    """`ct_task` planned and preprocessed once: (its `Workdir`, the plan at width 4)."""
    from rog.pipeline.stages import run_preprocessing
    wd, plan, _ = run_preprocessing(ct_task, tmp_path_factory.mktemp("work"), workers=1)
    plan.width = 4
    return wd, plan


def log_rows(run_dir) -> list[dict]:
    """A training run's log.csv rows."""
    import csv
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


def interrupted_then_resumed(plan, data_dir, run_dir, config, monkeypatch, stop_at: int) -> dict:
    """Train `config` into `run_dir`, interrupted (Ctrl-C) in its `stop_at`-th validation, so
    after `stop_at - 1` finished epochs, then resumed to the end; returns the last checkpoint."""
    from rog.checkpoint import load_checkpoint
    from rog.train.trainer import Trainer
    calls, validate = [], Trainer._validate

    def interrupted(self, val):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return validate(self, val)

    monkeypatch.setattr(Trainer, "_validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(plan, data_dir, run_dir, config, progress=False).fit()
    monkeypatch.setattr(Trainer, "_validate", validate)
    assert load_checkpoint(run_dir / "checkpoint_last.pt")["epoch"] == stop_at - 1
    Trainer(plan, data_dir, run_dir, config, progress=False).fit(resume=True)
    return load_checkpoint(run_dir / "checkpoint_last.pt")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def net():
    """A tiny 3-class volumetric net for the benchmark sweeps."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(6, 3, 3, padding=1))


def self_labelled_cases(model, n: int, size, seed: int):
    """`n` random one-channel cases `[1, 1, *size]` labelled by `model`'s own prediction (clean
    Dice 1), with their own range as the box."""
    from rog.bench import BenchCase
    torch.manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            y = model(x).argmax(1)
        out.append(BenchCase(f"c{i}", x, y, x.amin((2, 3, 4), keepdim=True), x.amax((2, 3, 4), keepdim=True)))
    return out


@pytest.fixture(scope="session")
def segmenter3():
    """A small 3D segmenter trained on three-class sphere volumes (clean Dice about 0.7)."""
    from tests.trained import train_segmenter
    return train_segmenter(3)


@pytest.fixture(scope="session")
def segmenter2():
    """The same, binary (clean Dice about 0.85)."""
    from tests.trained import train_segmenter
    return train_segmenter(2)
