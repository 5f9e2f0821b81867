"""The one model a benchmark runs on, whatever its source (`rog.pipeline.sources`): the
`BenchModel` protocol and its two kinds, a model on rog's preprocessed grid (`GridModel`: a
run, or a registered, factory or TorchScript model with its plan) and a model on the scans as
stored (`ScanModel`: another tool's model, a user's, or a run through its whole inference)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from rog.bench.cases import SOURCES, BenchCase, default_cases, load_bench_cases
from rog.errors import UsageError
from rog.plan import Plan
from rog.results import Meta
from rog.rundir import ResultsDir, RunDir


class BenchModel(Protocol):
    """What a benchmark sweep needs of a model: the patch network and its settings, its cases,
    its description and where its results go."""

    source: object  # the frozen dataclass of `rog.pipeline.sources` it was loaded from
    network: nn.Module  # `[B, C, *patch]` -> logits `[B, K, *patch]`; an nn.ModuleList: folds
    weights: Path | list[Path] | None  # the checkpoint file(s), hashed into the provenance
    scopes: tuple[str, ...]  # the attack scopes it takes, its default first

    @property
    def num_classes(self) -> int: ...

    @property
    def patch(self) -> list[int] | None:
        """The sliding window's patch (None: whole cases through the network)."""

    @property
    def spacing(self) -> list[float] | None:
        """mm per voxel of every case (None: each case carries its own)."""

    @property
    def window(self) -> dict | None:
        """More `SlidingWindow` options: the tool's mirroring and tiling."""

    def inference(self) -> dict:
        """How another tool's inference runs here (`Meta.deployment`; `text`: one sentence)."""

    def check_save_volumes(self) -> None:
        """Raise a `RogError` before the sweep if `--save-volumes` cannot write its cases."""

    def load_cases(self, names: list[str] | None, max_cases: int | None, scope: str,
                   device: torch.device | str) -> tuple[list[BenchCase], str]:
        """(the cases, x `[1, C, ...]` and y `[1, ...]`, the key of `rog.bench.cases.SOURCES`
        saying where they come from): `names` (default: the model's own choice), at most
        `max_cases`, whole (scope "volume") or a patch around the label ("patch")."""

    def meta(self, label: str | None, cases_source: str, cases: list[BenchCase]) -> Meta:
        """The report's description of the model (`label`: its name there, None: its own)."""

    def keeper(self, results: ResultsDir):
        """The `rog.bench.volumes` writer of `--save-volumes` into `results`."""

    def results_folder(self, folder: str, kind: str) -> Path:
        """The default results folder of a sweep of `kind` ("attack", ...) whose folder suffix
        is `folder` (the attack scope, "corruptions" or "artefacts")."""


def _add_run(meta: Meta, run: RunDir):
    """Record in `meta` a rog run's folder, test scores and training seed (so the report groups
    a run's seeds, on its preprocessed cases or on the scans); returns the run's `TrainConfig`."""
    from rog.train.trainer import TrainConfig
    config = TrainConfig.from_dict(run.read_config(), str(run.config))
    meta.run, meta.test, meta.seed = str(run.path.resolve()), run.read_test_eval(), config.seed
    return config


@dataclass
class GridModel:
    """A model on rog's preprocessed grid: the network in eval mode, its plan, its run (None
    for a model rog did not train), the preprocessed folder its cases come from (None: not
    given) and its weights file; `factory` the --model's name (None: the run's own)."""

    source: object
    network: nn.Module
    plan: Plan
    run: RunDir | None
    data: Path | None
    weights: Path | None
    factory: str | None
    scopes = ("patch", "volume")
    window = None

    @property
    def name(self) -> str:
        return self.run.name if self.run else self.factory

    @property
    def num_classes(self) -> int:
        return self.plan.num_classes

    @property
    def patch(self) -> list[int]:
        return self.plan.val_patch_size

    @property
    def spacing(self) -> list[float]:
        return self.plan.target_spacing

    def inference(self) -> dict:
        return {}

    def check_save_volumes(self) -> None:
        """Every preprocessed case can be written back."""

    def load_cases(self, names, max_cases, scope, device):
        if self.data is None:
            raise UsageError(f"{self.source.about}: needs --data (a preprocessed folder)")
        names, source = (names, "given") if names else default_cases(self.data, self.run)
        names = names[:max_cases] if max_cases else names
        if not names:
            raise FileNotFoundError(f"{self.data}: no labelled preprocessed case to evaluate")
        from rog.data.preprocess import check_preprocessed
        check_preprocessed(self.data, names, self.plan, str(self.run.plan if self.run else self.source.plan))
        schemes = [n["scheme"] for n in self.plan.normalization]
        return load_bench_cases(self.data, names, scope, self.plan.val_patch_size, device, schemes), source

    def meta(self, label, cases_source, cases):
        from rog.models.summary import model_row
        meta = Meta(data=str(self.data.resolve()), cases_source=cases_source,
                    cases_source_text=SOURCES[cases_source], class_names=self.plan.class_names)
        config = _add_run(meta, self.run) if self.run else None
        name = self.factory or (config and config.model) or self.plan.model
        meta.label = label or self.name
        meta.model = model_row(self.network, self.plan, name)
        return meta

    def keeper(self, results):
        from rog.bench.volumes import VolumeWriter
        return VolumeWriter(results, self.data)

    def results_folder(self, folder, kind):
        return self.run.workdir.results(f"{self.run.name}-{folder}").path if self.run else Path(f"rog_{folder}")


@dataclass
class ScanModel:
    """A model on the scans as stored: `tool` the `rog.external.ExternalModel` (the patch
    network, the tool's window settings, the tool's processing of each case around it), its
    cases those of the source's images and labels folders; `run` the rog run it is, if any."""

    source: object
    tool: object
    run: RunDir | None = None
    scopes = ("volume",)
    spacing = None  # each case carries its scan's

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def network(self) -> nn.Module:
        return self.tool.network

    @property
    def weights(self):
        return self.tool.weights

    @property
    def num_classes(self) -> int:
        return self.tool.num_classes

    @property
    def patch(self):
        return self.tool.patch

    @property
    def window(self):
        return self.tool.window

    def inference(self) -> dict:
        return self.tool.inference()

    def check_save_volumes(self) -> None:
        self.tool.check_save_volumes()

    def load_cases(self, names, max_cases, scope, device):
        return self.tool.load_cases(self.source.images, self.source.labels, names, max_cases, device), "folders"

    def meta(self, label, cases_source, cases):
        t = self.tool
        meta = Meta(label=label or t.name, cases_source=cases_source, cases_source_text=SOURCES[cases_source],
                    model=t.summary(cases[0].x.shape[2:]),
                    class_names=t.class_names, deployment=t.inference() or None)
        if self.run:
            _add_run(meta, self.run)
        return meta

    def keeper(self, results):
        from rog.bench.volumes import ScanWriter
        return ScanWriter(results, self.tool)

    def results_folder(self, folder, kind):
        return Path(f"rog_{self.source.tag}-{kind}")
