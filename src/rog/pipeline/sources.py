"""Where a command's model comes from: one small frozen dataclass per source, chosen once from
the command's options by `source_from`, each with `load()`, which returns the one benchmark
model of `rog.pipeline.models` (`GridModel` or `ScanModel`). A new source is a class here and
its place in `SOURCES` (its flags go in `cli/sweep_options.py`)."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import ClassVar

from rog.errors import UsageError
from rog.pipeline.models import GridModel, ScanModel


def flag(field: str) -> str:
    """The command-line spelling of a source's field."""
    return {"run": "RUN (a run directory)", "tta": "--disable-tta"}.get(field, "--" + field.replace("_", "-"))


class _OnScans:
    """A source whose cases are the scans of its `images` and `labels` folders: both needed."""

    def __post_init__(self):
        if not (self.images and self.labels):
            raise UsageError(f"{self.about}: needs --images and --labels")


@dataclass(frozen=True)
class RunSource:
    """A rog run on its preprocessed cases (the paper's setting): `run` its folder, `data` a
    preprocessed folder (default: its work directory's)."""

    run: str | Path
    data: str | Path | None = None
    about: ClassVar[str] = "a run on its preprocessed cases (RUN)"

    @staticmethod
    def claims(given: dict) -> bool:
        return "run" in given

    def load(self) -> GridModel:
        from rog.checkpoint import load_run
        from rog.rundir import RunDir
        network, plan, _ = load_run(self.run)
        run = RunDir(self.run)
        return GridModel(self, network, plan, run, Path(self.data) if self.data else run.workdir.preprocessed,
                         run.weights(), None)


@dataclass(frozen=True)
class FactorySource:
    """A model rog did not train on rog's preprocessed cases: `model` a registered name or
    `package.module:factory` with a state-dict `checkpoint`, or a TorchScript `checkpoint`
    alone; `plan` the plan.json it runs under, `data` its preprocessed folder (benchmarks)."""

    model: str | None = None
    checkpoint: str | Path | None = None
    plan: str | Path | None = None
    data: str | Path | None = None
    about: ClassVar[str] = "a model on rog's preprocessed cases (--model or a TorchScript --checkpoint, with --plan)"

    def __post_init__(self):
        if not self.plan:
            raise UsageError(f"{'--model' if self.model else '--checkpoint'} needs --plan (and --model usually "
                             "--checkpoint), or --images and --labels for the scans as stored")

    @staticmethod
    def claims(given: dict) -> bool:
        return "model" in given or "checkpoint" in given

    def load(self) -> GridModel:
        from rog.checkpoint import load_external
        network, plan = load_external(self.model, self.checkpoint, self.plan)
        name = self.model or f"torchscript:{Path(self.checkpoint).name}"
        return GridModel(self, network, plan, None, Path(self.data) if self.data else None,
                         Path(self.checkpoint) if self.checkpoint else None, name)


@dataclass(frozen=True)
class RawSource(_OnScans):
    """A user's model on the scans as stored (`rog.external.raw`): `model` a
    `package.module:factory` (weights from a state-dict `checkpoint`) or a TorchScript
    `checkpoint`; through a sliding window of `window` voxels (None: whole cases) and `overlap`."""

    images: str | Path | None = None
    labels: str | Path | None = None
    model: str | None = None
    checkpoint: str | Path | None = None
    window: tuple[int, ...] | None = None
    overlap: float = 0.5
    about: ClassVar[str] = "a model given with --model or --checkpoint and --images (your model on the scans as stored)"
    tag: ClassVar[str] = "raw"

    @staticmethod
    def claims(given: dict) -> bool:
        return "images" in given and ("model" in given or "checkpoint" in given) and "run" not in given

    def load(self) -> ScanModel:
        from rog.external.raw import load_raw
        return ScanModel(self, load_raw(self.model, self.checkpoint, self.window, self.overlap))


@dataclass(frozen=True)
class RunScansSource(_OnScans):
    """A rog run on the scans as stored, through its whole `rog predict` pipeline
    (`rog.infer.scan`, post-processing aside)."""

    run: str | Path
    images: str | Path | None = None
    labels: str | Path | None = None
    about: ClassVar[str] = "a run on the scans as stored (RUN with --images)"
    tag: ClassVar[str] = "run"

    @staticmethod
    def claims(given: dict) -> bool:
        return "images" in given and "run" in given

    def load(self) -> ScanModel:
        from rog.external.raw import load_run_on_scans
        from rog.rundir import RunDir
        return ScanModel(self, load_run_on_scans(self.run), run=RunDir(self.run))


@dataclass(frozen=True)
class NnunetSource(_OnScans):
    """A trained nnU-Net v2 configuration folder, deployed as `nnUNetv2_predict` deploys it, or
    several of one dataset (a tuple), ensembled as `nnUNetv2_ensemble` ensembles them: `folds` to ensemble (None: every fold found), `tta` mirroring, `overlap` of its windows,
    `postprocessing` "auto" (the folder's), "none" or a file, `perturb_background`: a masked
    scan's zero background perturbed too."""

    nnunet: str | Path | tuple
    images: str | Path | None = None
    labels: str | Path | None = None
    folds: tuple | None = None
    tta: bool = True
    overlap: float = 0.5
    postprocessing: str = "auto"
    perturb_background: bool = False
    about: ClassVar[str] = "an nnU-Net model (--nnunet)"
    tag: ClassVar[str] = "nnunet"

    @staticmethod
    def claims(given: dict) -> bool:
        return "nnunet" in given

    def load(self) -> ScanModel:
        from rog.external.nnunet import load_nnunet
        from rog.external.nnunet_multi import load_nnunet_ensemble
        dirs = [self.nnunet] if isinstance(self.nnunet, (str, Path)) else list(self.nnunet)
        load = load_nnunet if len(dirs) == 1 else load_nnunet_ensemble
        post = None if self.postprocessing == "none" else self.postprocessing
        return ScanModel(self, load(dirs[0] if len(dirs) == 1 else dirs, list(self.folds) if self.folds else None,
                                    tta=self.tta, overlap=self.overlap, postprocessing=post,
                                    perturb_background=self.perturb_background))


@dataclass(frozen=True)
class BundleSource(_OnScans):
    """A MONAI bundle folder (configs/inference.json, models/model.pt)."""

    bundle: str | Path
    images: str | Path | None = None
    labels: str | Path | None = None
    about: ClassVar[str] = "a MONAI bundle (--bundle)"
    tag: ClassVar[str] = "bundle"

    @staticmethod
    def claims(given: dict) -> bool:
        return "bundle" in given

    def load(self) -> ScanModel:
        from rog.external.bundle import load_bundle
        return ScanModel(self, load_bundle(self.bundle))


# the first that claims the given options is the source; the order settles overlaps (a run
# with --images is a run on scans, --model with --images a user's model on scans)
SOURCES = (NnunetSource, BundleSource, RawSource, RunScansSource, FactorySource, RunSource)
GRID_SOURCES = (FactorySource, RunSource)  # what `rog predict` takes: models on rog's grid


def _defaults() -> dict:
    """Each source field's default (fields shared by sources share it: a test keeps it so)."""
    return {f.name: f.default for s in SOURCES for f in fields(s) if f.default is not MISSING}


def source_from(options: dict, among: tuple = SOURCES):
    """The source a command's options name.

    Args:
        options: option name -> value (a parsed command line; names no source has are
            ignored, a value at its default counts as not given).
        among: the source classes the command takes, in the order they claim.

    Returns:
        The frozen source dataclass, with the options given and the defaults of the others.

    Raises:
        UsageError: no source claims the options, or one is given that the source does not
            take (named, with the sources that take it).
    """
    known, defaults = {f.name for s in among for f in fields(s)}, _defaults()
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()
             if k in known and v is not None and v != defaults.get(k)}
    chosen = next((s for s in among if s.claims(given)), None)
    if chosen is None:
        raise UsageError("give a run directory, or --model (or a TorchScript --checkpoint) with --plan"
                         + (", or --nnunet, --bundle or --model with --images and --labels" if among == SOURCES else ""))
    takes = {f.name for f in fields(chosen)}
    for k in given:
        if k not in takes:
            by = " or ".join(s.about for s in among if k in {f.name for f in fields(s)})
            raise UsageError(f"{flag(k)}: for {by}, not {chosen.about}")
    return chosen(**given)


def sources_from(runs: list, options: dict, among: tuple = SOURCES) -> list:
    """One source per run folder of `runs` (`rog predict`'s ensemble), else the one that
    `options` name (`source_from`)."""
    return [source_from({**options, "run": r}, among) for r in runs] if runs else [source_from(options, among)]
