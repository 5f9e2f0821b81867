"""Which cases a benchmark attacks, and loading them with the box of the whole case.

Default cases, most trustworthy first: the task's labelled test cases; else the run's
held-out split (cases that neither trained the model nor selected its checkpoint); else the
run's validation split, which selected `checkpoint_best.pt` and so flatters clean Dice and
tau (the report says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from rog.attacks.threat import ThreatModel
from rog.bench.records import BenchError
from rog.data.preprocess import labelled_cases, load_case
from rog.data.sampling import centred_patch
from rog.rundir import RunDir

SOURCES = {
    "test": "the task's labelled test cases",
    "held-out": "the run's held-out split (trained nothing, selected no checkpoint)",
    "validation": "the run's validation split (it selected the checkpoint: optimistic)",
    "training": "labelled training cases (no run: which of them trained the model is unknown)",
    "given": "cases named on the command line",
    "folders": "the labelled cases of the given images and labels folders",
}


@dataclass
class BenchCase:
    """One case ready to attack: x `[1, C, ...]`, y `[1, ...]`, box lo/hi `[1, C, 1, 1, 1]`.
    `around`: where x is a scan as stored rather than the model's input, `around(model)` is
    the tool's deployed inference of this case around the whole-volume model, a
    differentiable map x -> logits on y's grid (`rog.external`), so that eps, the box and the
    Dice live on the scan. `spacing`: mm per voxel axis of x, where cases differ in it (None:
    the sweep's). `fixed`: voxels no perturbation may change, bool broadcastable to x (a
    masked scan's zero background, a product of preprocessing rather than a measurement):
    the model sees them as in x (`Fixed`) and the benchmark puts them back in what it records.
    `hu`: model-input units per Hounsfield unit of each channel (None for a channel not known to
    be CT; the whole list None where no channel is), for a threat in HU (`rog.bench.units`)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    around: Callable[[nn.Module], nn.Module] | None = None
    spacing: list[float] | None = None
    fixed: torch.Tensor | None = None
    hu: list[float | None] | None = None

    def held(self, x: torch.Tensor) -> torch.Tensor:
        """x (like `self.x`) with the `fixed` voxels put back to the case's own values."""
        return x if self.fixed is None else torch.where(self.fixed, self.x, x)


class Fixed(nn.Module):
    """`model` with the voxels `fixed` (bool, broadcastable to its input) held at `x0`'s values:
    `[B, C, ...]` -> the model's output; a perturbation there changes nothing, and its gradient
    there is zero, exactly as its finite difference."""

    def __init__(self, model: nn.Module, x0: torch.Tensor, fixed: torch.Tensor):
        super().__init__()
        self.model, self.x0, self.fixed = model, x0, fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.where(self.fixed, self.x0, x))


def default_cases(data_dir: str | Path, run: RunDir | None = None) -> tuple[list[str], str]:
    """(case names, source key of `SOURCES`) for a benchmark of `run`'s model on `data_dir`."""
    test = labelled_cases(data_dir, "test")
    if test:
        return test, "test"
    split = run.read_splits() if run is not None else None
    if split and split.get("test"):
        return split["test"], "held-out"
    if split:
        return split["val"], "validation"
    return labelled_cases(data_dir), "training"


def load_bench_cases(data_dir: str | Path, names: list[str], scope: str, patch, device="cpu",
                     schemes: list[str] | None = None) -> list[BenchCase]:
    """Load `names` from a preprocessed folder: the whole case (scope "volume") or its
    label-centred patch (scope "patch"), with the channel range of the whole case as box;
    `schemes`: the plan's normalisation scheme per channel, whose "ct" channels are in HU
    before normalisation (`BenchCase.hu`: 1/std of the case's normalisation)."""
    out = []
    for name in names:
        image, label, props = load_case(data_dir, name, mmap=False)
        if label is None:
            raise BenchError(f"{data_dir}/{name}: no label, cannot be attacked")
        lo, hi = ThreatModel.channel_range(torch.from_numpy(image)[None])  # the whole case's box
        if scope == "patch":
            image, label = centred_patch(image, label, patch)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        y = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))[None]
        hu = [1.0 / std if scheme == "ct" else None for scheme, (_, std) in zip(schemes or [], props["intensity"])]
        out.append(BenchCase(name, x.to(device), y.to(device), lo.to(device), hi.to(device),
                             hu=hu if any(v is not None for v in hu) else None))
    return out
