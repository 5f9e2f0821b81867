"""One benchmark of one model (`rog attack`, `rog corrupt`, `rog artefact`, `rog certify`, the
demo's sweeps): choose the cases, describe the model for the report, load the cases and run the
attacks, the corruptions, the worst-case artefact search or the certification into a results
folder."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rog.atomic import file_hash, writable_dir
from rog.bench.artefact import ArtefactConfig, ArtefactSweep
from rog.bench.certify import CertifyConfig, CertifySweep
from rog.bench.corruption import CorruptionConfig, CorruptionSweep
from rog.bench.modality import ModalityConfig, ModalitySweep
from rog.bench.runner import Benchmark, BenchmarkConfig
from rog.devices import init_distributed, resolve_device
from rog.errors import UsageError
from rog.messages import log
from rog.pipeline.models import BenchModel
from rog.results import Results
from rog.rundir import ResultsDir


SWEEPS = {BenchmarkConfig: Benchmark, CorruptionConfig: CorruptionSweep, ArtefactConfig: ArtefactSweep,
          CertifyConfig: CertifySweep, ModalityConfig: ModalitySweep}
FOLDERS = {"certify": "certified", "modality": "modalities"}  # the default folder's suffix where it is not the kind + "s"


@dataclass
class SweepRequest:
    """A benchmark of `source`'s model (a source of `rog.pipeline.sources`): `config` is a
    `BenchmarkConfig` (attacks; scope None: the model's default), a `CorruptionConfig` (random
    scanner artefacts), an `ArtefactConfig` (worst-case ones) or a `CertifyConfig` (randomized
    smoothing's certified Dice); `cases` (default: the model's
    choice, `rog.bench.cases`), at most `max_cases`; `label` names the model in results and
    reports; `out` the results folder (default: WORKDIR/attacks/RUN-SCOPE for a run, else
    ./rog_SCOPE or ./rog_TOOL-KIND);
    `save_volumes`: also write the perturbed whole cases as images in each scan's geometry
    (`rog.bench.volumes`; rog's own models, nnU-Net's and users' models on raw scans)."""

    source: object
    config: BenchmarkConfig | CorruptionConfig | ArtefactConfig | CertifyConfig
    cases: list[str] | None = None
    max_cases: int | None = None
    label: str | None = None
    out: str | Path | None = None
    device: str = "auto"
    progress: bool = True
    save_volumes: bool = False

    @property
    def sweep(self) -> type:
        """The sweep that runs `config`: `Benchmark`, `CorruptionSweep`, `ArtefactSweep` or
        `CertifySweep`."""
        return SWEEPS[type(self.config)]

    @property
    def kind(self) -> str:
        """The results' kind: "attack", "corruption", "artefact" or "certify"."""
        return self.sweep.kind

    @property
    def folder(self) -> str:
        """The default results folder's suffix: the attack scope, "corruptions", "artefacts" or
        "certified"."""
        return _folder(self.config)


def _folder(config) -> str:
    if isinstance(config, BenchmarkConfig):
        return config.scope
    kind = SWEEPS[type(config)].kind
    return FOLDERS.get(kind, kind + "s")


@dataclass
class SweepResult:
    results: Results | None  # None on torchrun ranks > 0: rank 0 merges and reports
    out: Path


def run_sweep(req: SweepRequest) -> SweepResult:
    """Run the benchmark of `req` (sharded over torchrun's ranks where it runs under one).

    Args:
        req: the model's source, the attack or corruption configuration, cases, output.

    Returns:
        The typed `Results` (None on torchrun ranks > 0) and the results folder.

    Raises:
        RogError subclasses naming the argument or file: an unusable model source, a results
        folder of another configuration, cases preprocessed under another plan.
    """
    model = req.source.load()
    config = _resolved(req.config, model)
    deployment = model.inference()
    if deployment:
        log.info(f"{model.name}: {deployment['text']}")
    if req.save_volumes:
        model.check_save_volumes()
    device = resolve_device(req.device)
    init_distributed()
    cases, source = model.load_cases(req.cases, req.max_cases, getattr(config, "scope", "volume"), device)
    meta = model.meta(req.label, source, cases)  # before the folder is made: it reads the run's files
    out = writable_dir(req.out or model.results_folder(_folder(config), req.kind))
    keep = model.keeper(ResultsDir(out)) if req.save_volumes else None
    net = model.network.to(device)  # after `meta`: the FLOP count runs on the CPU
    common = dict(progress=req.progress, meta=meta, weights=file_hash(model.weights) if model.weights else None,
                  window=model.window, keep=keep)
    if isinstance(config, BenchmarkConfig):
        sweep = Benchmark(net, model.num_classes, config, out, model.patch, spacing=model.spacing, **common)
    else:
        sweep = req.sweep(net, model.num_classes, config, out, model.patch, model.spacing, **common)
    return SweepResult(sweep.run(cases), out)


def _resolved(config, model: BenchModel):
    """`config` with an attack scope the model takes: its default where none is given."""
    if not isinstance(config, BenchmarkConfig):
        return config
    scope = config.scope or model.scopes[0]
    if scope not in model.scopes:
        raise UsageError(f"--scope {scope}: {model.source.about} is attacked on whole cases (--scope "
                         f"{model.scopes[0]}, its default)")
    return replace(config, scope=scope)
