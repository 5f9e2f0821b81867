"""What the benchmark needs of a model trained by another tool."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from rog.bench.cases import BenchCase


class ExternalError(Exception):
    """A model folder or its input that cannot be used: the message names the path and why."""


@dataclass
class ExternalModel:
    """A patch network `[B, C, *patch]` -> logits `[B, K, *patch]` with its tool's inference
    settings. `load_cases(images, labels, names)` returns the cases preprocessed by the tool
    (x in raw intensities, `prepare` = the tool's normalisation for that case)."""

    name: str
    network: nn.Module
    patch: list[int]
    num_channels: int
    class_names: list[str]  # foreground classes, label 1 first
    spacing: list[float]  # mm per voxel axis of the network's input
    window: dict  # `SlidingWindow` options of the tool's own inference: mirror_axes, style
    weights: Path  # the checkpoint file, hashed into the results' provenance
    load_cases: Callable[..., list[BenchCase]] = field(repr=False, default=None)
    # one case's channel files -> its label map in the files' own geometry and axis order,
    # through rog's sliding window and the tool's export (the clean-agreement check)
    predict: Callable[[list[Path]], np.ndarray] = field(repr=False, default=None)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1
