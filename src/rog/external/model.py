"""What the benchmark needs of a model trained by another tool."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rog.bench.cases import BenchCase
from rog.data import formats
from rog.errors import RogError


class InputMap(nn.Module):
    """A tool's intensity preprocessing of one case as a differentiable map `[B, C, ...]` ->
    `[B, C, ...]`: `transform` (the subclass's) plus a fixed `residual` `[1, C, ...]`, the
    tool's clean input minus the transform's, so that the clean input the network sees is the
    tool's own wherever the tool's order of operations differs from the map's."""

    def __init__(self):
        super().__init__()
        self.register_buffer("residual", None)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.transform(x)
        return z if self.residual is None else z + self.residual

    def fit_residual(self, raw: torch.Tensor, theirs: torch.Tensor) -> "InputMap":
        """Keep theirs - transform(raw) (`[C, ...]` each) as the residual, where non-zero."""
        with torch.no_grad():
            residual = theirs.float() - self.transform(raw[None])[0]
        self.residual = residual[None] if residual.abs().max() > 0 else None
        return self


class ExternalError(RogError):
    """A model folder or its input that cannot be used: the message names the path and why."""


@dataclass
class ExternalModel(ABC):
    """A patch network `[B, C, *patch]` -> logits `[B, K, *patch]` with its tool's inference
    settings; each tool (`rog.external.nnunet`, `rog.external.bundle`) is a subclass that
    preprocesses cases as the tool does."""

    name: str
    network: nn.Module
    patch: list[int]
    num_channels: int
    class_names: list[str]  # foreground classes, label 1 first
    spacing: list[float]  # mm per voxel axis of the network's input
    window: dict  # `SlidingWindow` options of the tool's own inference: mirror_axes, tiling, ...
    weights: Path | None  # the checkpoint file, hashed into the results' provenance
    # each loaded case's image files (`load_cases` fills it), for `save_volume`
    scan_files: dict[str, list[Path]] = field(default_factory=dict, init=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    @abstractmethod
    def load_cases(self, images: str | Path, labels: str | Path, names: list[str] | None = None,
                   max_cases: int | None = None, device: torch.device | str = "cpu") -> list[BenchCase]:
        """The labelled cases of the `images` and `labels` folders (`names` only, at most
        `max_cases`) with x in raw intensities `[1, C, ...]`, y `[1, ...]` and `around`, the
        tool's processing of that case around the whole-volume model."""

    def volume_ending(self, case: str) -> str:
        """The file ending `save_volume` writes for `case`: its scan's own (NIfTI for DICOM)."""
        end = formats.ending(self.scan_files[case][0])
        return ".nii.gz" if end in (None, formats.DICOM) else end

    def save_volume(self, case: str, path: Path, data: np.ndarray, label: bool) -> None:
        """Write `data` (an image `[C, ...]` or a label map `[...]` on the grid of `case`'s x) to
        `path` in the scan's geometry (`--save-volumes`)."""
        raise ExternalError(f"{self.name}: --save-volumes is not available for this kind of model")

    def predict(self, files: list[Path], device: torch.device | str = "cpu") -> np.ndarray:
        """One case's channel files -> its label map in the files' own geometry and axis order,
        through rog's sliding window and the tool's export (the clean-agreement check)."""
        raise ExternalError(f"{self.name}: no prediction in the tool's own geometry for this kind of model")
