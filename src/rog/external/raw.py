"""Models benchmarked on the scans as stored, read by rog (`--images` and `--labels` folders):
- a user's own model (`RawModel`): `--model package.module:factory` (the factory called with
  no argument; weights from a state-dict `--checkpoint`) or a TorchScript `--checkpoint`. No
  rog preprocessing is forced on it: it takes each scan's raw intensities on the scan's own
  voxel grid (in the file's voxel order) and returns logits on the same grid; rog adds only a
  sliding window where `--window` is given (MONAI's tiling and Gaussian weights, zero padding
  as MONAI's inferer), else each case goes through it whole;
- a rog run (`RunOnScans`): each case through rog's own whole inference of the scan
  (`rog.infer.scan.RogScan`: the run's preprocessing, sliding window and inverse)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from rog.attacks.threat import ThreatModel
from rog.bench.cases import BenchCase
from rog.checkpoint import is_torchscript, load_torchscript, load_weights
from rog.data import formats
from rog.data.io import read_image, read_label
from rog.errors import RogError
from rog.external.model import ExternalError, ExternalModel
from rog.models.registry import factory_model


def load_raw(spec: str | None, checkpoint: str | Path | None, window: list[int] | None = None,
             overlap: float = 0.5) -> "RawModel":
    """The user model `spec` (package.module:factory) with optional state-dict `checkpoint`, or
    the TorchScript model `checkpoint` alone; `window`: the sliding window's patch (None: whole
    cases), `overlap` its overlap."""
    scripted = checkpoint is not None and Path(checkpoint).is_file() and is_torchscript(checkpoint)
    if spec is None and not scripted:
        raise ExternalError(f"{checkpoint}: not a TorchScript model file (a state dict needs --model)"
                            if checkpoint else "--images with --model package.module:factory or a TorchScript "
                            "--checkpoint: give one")
    if spec is not None and scripted:
        raise ExternalError(f"{checkpoint}: a TorchScript file is the whole model: give it without --model")
    network = load_torchscript(checkpoint) if scripted else factory_model(spec)
    if checkpoint and not scripted:
        load_weights(network, checkpoint)
    name = spec or f"torchscript:{Path(checkpoint).name}"
    options = {"overlap": float(overlap), "pad_mode": "constant"}
    return RawModel(name=name, network=network.eval(), patch=list(window) if window else None, num_channels=0,
                    class_names=[], window=options, weights=Path(checkpoint) if checkpoint else None)


@dataclass
class RawModel(ExternalModel):
    """A user model on raw scans; `num_channels` and `class_names` are learnt from the first
    case loaded (the channels its images have, the classes one forward pass gives)."""

    def load_cases(self, images, labels, names=None, max_cases=None, device="cpu") -> list[BenchCase]:
        from rog.infer.predictor import cases_from_input
        try:
            found = cases_from_input(images)
        except RogError as e:
            raise ExternalError(str(e)) from e
        references = formats.images_in(labels) if Path(labels).is_dir() else {}
        if not references:
            raise ExternalError(f"{labels}: no label map ({', '.join(formats.ENDINGS)} or DICOM series folder)")
        out = []
        for case in [c for c in found if not names or c.name in names][:max_cases]:
            if case.name not in references:
                raise ExternalError(f"{labels}: missing label of case {case.name}")
            image, geometry = read_image(case.images)
            label, _ = read_label(references[case.name])
            if label.shape != image.shape[1:]:
                raise ExternalError(f"{references[case.name]}: shape {label.shape} differs from the image's "
                                    f"{image.shape[1:]}")
            self._learn(image.shape[0], case.images[0])
            x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None]
            lo, hi = ThreatModel.channel_range(x)
            y = torch.from_numpy(label.astype(np.int64))[None]
            out.append(BenchCase(case.name, x.to(device), y.to(device), lo.to(device), hi.to(device),
                                 spacing=[float(s) for s in geometry.spacing], around=self.around(geometry),
                                 hu=self.hu()))
            self.scan_files[case.name], self.scan_geometry[case.name] = list(case.images), geometry
        if names and len(out) < len(names[:max_cases]):
            raise ExternalError(f"{images}: no case named {sorted(set(names) - {c.name for c in out})[0]}")
        return out

    def around(self, geometry):
        """The processing of a case around the network: none (the model takes the scan)."""
        return None

    def _learn(self, channels: int, first: Path) -> None:
        """Channels from the first case, classes from one forward pass; later cases must agree."""
        if self.num_channels:
            if channels != self.num_channels:
                raise ExternalError(f"{first}: {channels} channel(s), the other cases have {self.num_channels}")
            return
        self.num_channels = channels
        shape = self.patch or [16, 16, 16]
        try:
            with torch.no_grad():
                k = self.network(torch.zeros(1, channels, *shape)).shape[1]
        except Exception as e:  # noqa: BLE001 - the user's model failing on the data's channels, named
            raise ExternalError(f"{self.name}: fails on a [1, {channels}, {', '.join(map(str, shape))}] input "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
        self.class_names = [f"class {i}" for i in range(1, k)]


@dataclass
class RunOnScans(RawModel):
    """A rog run on raw scans: its network, with its plan's preprocessing and inverse around it."""

    plan: object = None

    def around(self, geometry):
        from rog.infer.scan import RogScan
        return partial(RogScan, geometry=geometry, plan=self.plan)

    def hu(self):
        hu = [1.0 if n["scheme"] == "ct" else None for n in self.plan.normalization]
        return hu if any(v is not None for v in hu) else None

    def _learn(self, channels: int, first: Path) -> None:
        if channels != self.num_channels:
            raise ExternalError(f"{first}: {channels} channel(s), the run's plan takes {self.num_channels}")


def load_run_on_scans(run: str | Path) -> RunOnScans:
    """The rog run at `run`, for its scans as stored."""
    from rog.checkpoint import load_run
    from rog.rundir import RunDir
    network, plan, _ = load_run(run)
    return RunOnScans(name=f"{RunDir(run).name} (on scans)", network=network.eval(), patch=list(plan.val_patch_size),
                      num_channels=plan.num_channels,
                      class_names=plan.class_names,
                      window={}, weights=RunDir(run).weights(), plan=plan)
