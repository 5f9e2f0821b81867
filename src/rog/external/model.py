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
from rog.data.io import Geometry, write_label
from rog.errors import RogError
from rog.models.summary import row
from rog.results import ModelInfo


class ExternalError(RogError):
    """A model folder or its input that cannot be used: the message names the path and why."""


@dataclass
class ExternalModel(ABC):
    """A patch network `[B, C, *patch]` -> logits `[B, K, *patch]` (or an `nn.ModuleList` of
    them: an ensemble of folds, tiled one by one and averaged) with its tool's inference
    settings (`patch` None: a network that takes whole cases); each source (`nnunet`, `bundle`,
    `raw`) is a subclass whose cases are the scans as stored, with the tool's processing of
    each case around the network (`BenchCase.around`)."""

    name: str
    network: nn.Module
    patch: list[int] | None
    num_channels: int
    class_names: list[str]  # foreground classes, label 1 first
    window: dict  # `SlidingWindow` options of the tool's own inference: mirror_axes, tiling, ...
    weights: Path | list[Path] | None  # the checkpoint file(s), hashed into the results' provenance
    # each loaded case's image files and, once known, the geometry of its scan with x's voxel
    # order (`load_cases` fills them), for `save_volume`
    scan_files: dict[str, list[Path]] = field(default_factory=dict, init=False)
    scan_geometry: dict[str, Geometry] = field(default_factory=dict, init=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    @abstractmethod
    def load_cases(self, images: str | Path, labels: str | Path, names: list[str] | None = None,
                   max_cases: int | None = None, device: torch.device | str = "cpu") -> list[BenchCase]:
        """The labelled cases of the `images` and `labels` folders (`names` only, at most
        `max_cases`): x the scan's raw intensities `[1, C, ...]`, y its label as stored
        `[1, ...]`, `around` the tool's processing of that case around the whole-volume model,
        `spacing` the scan's."""

    def hu(self) -> list[float | None] | None:
        """`BenchCase.hu` of the scans as stored: 1.0 for each channel the tool says is CT
        (its intensities are then HU), None where it does not say (a threat in HU is refused)."""
        return None

    def inference(self) -> dict:
        """How the tool's inference is run here, for the results' `Meta.deployment` and the
        command's first lines (`text`: one sentence); empty where there is nothing to say."""
        return {}

    def summary(self, shape) -> ModelInfo:
        """Name, parameters and GFLOPs of one forward of the network at its patch (at `shape`,
        a case's, where it takes whole cases)."""
        return row(self.network, self.name, self.num_channels, self.patch or shape)

    def volume_ending(self, case: str) -> str:
        """The file ending `save_volume` writes for `case`: its scan's own (NIfTI for DICOM)."""
        end = formats.ending(self.scan_files[case][0])
        return ".nii.gz" if end in (None, formats.DICOM) else end

    def check_save_volumes(self) -> None:  # noqa: B027 - a no-op unless a source has something to refuse
        """Raise an `ExternalError` if `save_volume` cannot write this model's cases (checked
        before a benchmark starts, so a refusal loses no work)."""

    def save_volume(self, case: str, path: Path, data: np.ndarray, label: bool) -> None:
        """Write `data` (an image `[C, ...]` or a label map `[...]` on the grid of `case`'s x) to
        `path` in the scan's geometry (`--save-volumes`)."""
        from rog.bench.volumes import write_image
        geometry = self.scan_geometry[case]
        write_label(path, data, geometry) if label else write_image(path, data, geometry)
