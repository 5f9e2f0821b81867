"""Where a command's model comes from, and loading it: a run directory; a registered or
`package.module:factory` model with its plan, weights and preprocessed data; an nnU-Net v2
model folder; a MONAI bundle; a user's model on the scans as stored."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from rog.errors import UsageError
from rog.plan import Plan
from rog.rundir import RunDir


@dataclass
class ModelSource:
    """One of: `run` (a run directory); `model` (registered name or `package.module:factory`)
    with `plan`, optional `checkpoint` and `data` (a preprocessed folder); `nnunet` (a trained
    configuration folder, `folds` to ensemble, None: all as nnU-Net; `tta`: mirroring, on as
    in nnU-Net; `overlap` of its windows; `postprocessing`: "auto", "none" or a file;
    `perturb_background`: a masked scan's zero background perturbed too) or `bundle` (a MONAI bundle folder), each
    with `images` and `labels` folders that the tool preprocesses itself; or `model` /
    `checkpoint` with `images` and `labels` and no plan: the user's model on the scans as
    stored (`rog.external.raw`), through a sliding window of `window` (None: whole cases) and
    `overlap`; or `run` with `images` and `labels`: the run on the scans as stored, through its
    whole `rog predict` pipeline (`rog.infer.scan`)."""

    run: str | Path | None = None
    model: str | None = None
    checkpoint: str | Path | None = None
    plan: str | Path | None = None
    data: str | Path | None = None
    nnunet: str | Path | None = None
    folds: list | None = None
    tta: bool = True
    postprocessing: str | None = "auto"
    perturb_background: bool = False
    bundle: str | Path | None = None
    images: str | Path | None = None
    labels: str | Path | None = None
    window: list[int] | None = None
    overlap: float = 0.5

    @property
    def tool(self) -> str | None:
        """"nnunet" or "bundle" for another tool's model, "raw" for a user's model on the scans
        as stored, "run" for a rog run on the scans as stored (a run with --images), None for
        rog's own on its preprocessed cases."""
        if self.nnunet and self.bundle:
            raise UsageError("give --nnunet or --bundle, not both")
        if not self.nnunet and (self.folds or self.postprocessing != "auto" or self.perturb_background):
            raise UsageError("--folds, --postprocessing and --perturb-background: for an nnU-Net model (--nnunet)")
        if self.nnunet or self.bundle:
            return "nnunet" if self.nnunet else "bundle"
        if self.images and (self.model or self.checkpoint) and not self.run:
            if self.plan or self.data:
                raise UsageError("--images: the model takes the scans as stored; --plan and --data are for a model "
                                 "on rog's preprocessed cases (give one or the other)")
            return "raw"
        if self.images and self.run:
            return "run"
        if self.window:
            raise UsageError("--window: for a model given with --model or --checkpoint and --images")
        return None


@dataclass
class RogModel:
    """A model on rog's preprocessed grid: the network in eval mode, its plan, its run (None
    for --model), the preprocessed folder its cases come from and its weights file."""

    network: nn.Module
    plan: Plan
    run: RunDir | None
    data: Path | None
    weights: Path | None
    name: str | None  # --model's name; None: the run's own


def load_model(source: ModelSource, need_data: bool = False) -> RogModel:
    """The rog model of `source` (a run, or --model with --plan); `need_data`: a preprocessed
    folder is required (the run's work directory, or --data)."""
    from rog.checkpoint import load_external, load_run
    if source.model or (source.checkpoint and not source.run):  # a TorchScript file is a whole model
        what = "--model" if source.model else "--checkpoint"
        if not source.plan:
            raise UsageError(f"{what} needs --plan (and --model usually --checkpoint)")
        if need_data and not source.data:
            raise UsageError(f"{what} needs --data (a preprocessed folder)")
        network, plan = load_external(source.model, source.checkpoint, source.plan)
        name = source.model or f"torchscript:{Path(source.checkpoint).name}"
        return RogModel(network, plan, None, Path(source.data) if source.data else None,
                        Path(source.checkpoint) if source.checkpoint else None, name)
    if not source.run:
        raise UsageError("give a run directory, or --model (or a TorchScript --checkpoint) with --plan")
    network, plan, _ = load_run(source.run)
    run = RunDir(source.run)
    return RogModel(network, plan, run, Path(source.data) if source.data else run.workdir.preprocessed,
                    run.weights(), None)


def load_tool_model(source: ModelSource):
    """The `rog.external.ExternalModel` of an nnU-Net model folder, a MONAI bundle or a user's
    model on raw scans."""
    if not (source.images and source.labels):
        raise UsageError(f"--{source.tool if source.tool in ('nnunet', 'bundle') else 'images'} needs --images and "
                         "--labels")
    if source.tool == "raw":
        from rog.external.raw import load_raw
        return load_raw(source.model, source.checkpoint, source.window, source.overlap)
    if source.tool == "run":
        from rog.external.raw import load_run_on_scans
        return load_run_on_scans(source.run)
    if source.tool == "nnunet":
        from rog.external.nnunet import load_nnunet
        post = None if source.postprocessing == "none" else source.postprocessing
        return load_nnunet(source.nnunet, source.folds, tta=source.tta, overlap=source.overlap, postprocessing=post,
                           perturb_background=source.perturb_background)
    from rog.external.bundle import load_bundle
    return load_bundle(source.bundle)
