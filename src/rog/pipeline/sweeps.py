"""One benchmark of one model (`rog attack`, `rog corrupt`, `rog artefact`, the demo's
sweeps): choose the cases, describe the model for the report, load the cases and run the
attacks, the corruptions or the worst-case artefact search into a results folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rog.atomic import file_hash, writable_dir
from rog.bench.artefact import ArtefactConfig, ArtefactSweep
from rog.bench.cases import SOURCES, default_cases, load_bench_cases
from rog.bench.corruption import CorruptionConfig, CorruptionSweep
from rog.bench.runner import Benchmark, BenchmarkConfig
from rog.bench.volumes import ScanWriter, VolumeWriter
from rog.data.preprocess import check_preprocessed
from rog.devices import init_distributed, resolve_device
from rog.errors import UsageError
from rog.messages import log
from rog.models.summary import model_row, row
from rog.pipeline.models import ModelSource, RogModel, load_model, load_tool_model
from rog.results import Meta, Results
from rog.rundir import ResultsDir, RunDir


SWEEPS = {BenchmarkConfig: Benchmark, CorruptionConfig: CorruptionSweep, ArtefactConfig: ArtefactSweep}


@dataclass
class SweepRequest:
    """A benchmark of `source`'s model: `config` is a `BenchmarkConfig` (attacks), a
    `CorruptionConfig` (random scanner artefacts) or an `ArtefactConfig` (worst-case ones);
    `cases` (default: `rog.bench.cases`), at most `max_cases`; `label` names the model in results and reports; `out` the results folder
    (default: WORKDIR/attacks/RUN-SCOPE for a run, else ./rog_SCOPE or ./rog_TOOL-KIND);
    `save_volumes`: also write the perturbed whole cases as images in each scan's geometry
    (`rog.bench.volumes`; rog's own models, nnU-Net's and users' models on raw scans)."""

    source: ModelSource
    config: BenchmarkConfig | CorruptionConfig | ArtefactConfig
    cases: list[str] | None = None
    max_cases: int | None = None
    label: str | None = None
    out: str | Path | None = None
    device: str = "auto"
    progress: bool = True
    save_volumes: bool = False

    @property
    def attack(self) -> bool:
        return isinstance(self.config, BenchmarkConfig)

    @property
    def sweep(self) -> type:
        """The sweep that runs `config`: `Benchmark`, `CorruptionSweep` or `ArtefactSweep`."""
        return SWEEPS[type(self.config)]

    @property
    def kind(self) -> str:
        """The results' kind: "attack", "corruption" or "artefact"."""
        return self.sweep.kind

    @property
    def folder(self) -> str:
        """The default results folder's suffix: the attack scope, "corruptions" or "artefacts"."""
        return self.config.scope if self.attack else self.kind + "s"


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
    if req.source.tool:
        return _tool_sweep(req)
    m = load_model(req.source, need_data=True)
    default = m.run.workdir.results(f"{m.run.name}-{req.folder}").path if m.run else Path(f"rog_{req.folder}")
    out = Path(req.out) if req.out else default
    device = resolve_device(req.device)
    init_distributed()
    names, source = (req.cases, "given") if req.cases else default_cases(m.data, m.run)
    names = names[:req.max_cases] if req.max_cases else names
    if not names:
        raise FileNotFoundError(f"{m.data}: no labelled preprocessed case to evaluate")
    check_preprocessed(m.data, names, m.plan, str(m.run.plan) if m.run else str(req.source.plan))
    scope = req.config.scope if req.attack else "volume"
    cases = load_bench_cases(m.data, names, scope, m.plan.val_patch_size, device)
    meta = _rog_meta(m, source, req.label)
    keep = VolumeWriter(ResultsDir(out), m.data) if req.save_volumes else None
    sweep = _sweep(req, m.network.to(device), m.plan.num_classes, m.plan.val_patch_size, m.plan.target_spacing,
                   out, meta=meta, weights=file_hash(m.weights), keep=keep)
    return SweepResult(sweep.run(cases), out)


def _sweep(req: SweepRequest, net, num_classes: int, patch, spacing, out: Path, **common):
    """The attack benchmark, the corruption sweep or the artefact sweep of `req` on `net` (a
    patch network)."""
    if req.attack:
        return Benchmark(net, num_classes, req.config, out, patch, progress=req.progress, **common)
    return req.sweep(net, num_classes, req.config, out, patch, spacing, progress=req.progress, **common)


def _add_run(meta: Meta, run: RunDir):
    """Record in `meta` a rog run's folder, test scores and training seed (so the report groups
    a run's seeds, on its preprocessed cases or on the scans); returns the run's `TrainConfig`."""
    from rog.train.trainer import TrainConfig
    config = TrainConfig.from_dict(run.read_config(), str(run.config))
    meta.run, meta.test, meta.seed = str(run.path.resolve()), run.read_test_eval(), config.seed
    return config


def _rog_meta(m: RogModel, source: str, label: str | None) -> Meta:
    """The report's description of a rog model: label, run, data, model summary, class names,
    the run's test scores and training seed, where the cases come from."""
    meta = Meta(data=str(m.data.resolve()), cases_source=source, cases_source_text=SOURCES[source],
                class_names=m.plan.class_names)
    config = _add_run(meta, m.run) if m.run else None
    name = m.name or (config and config.model) or m.plan.model
    meta.label = label or (m.run.name if m.run else name)
    meta.model = model_row(m.network, m.plan, name)
    return meta


def _tool_sweep(req: SweepRequest) -> SweepResult:
    """`run_sweep` for an nnU-Net model folder, a MONAI bundle or a user's model on raw scans:
    the cases of the images and labels folders, whole, through the tool's processing and rog's
    sliding window with the tool's patch size, mirroring and tiling. Results go to `out`, else
    ./rog_TOOL-KIND."""
    tool = req.source.tool
    flag = f"--{tool}" if tool in ("nnunet", "bundle") else "--images"
    if req.attack and req.config.scope == "patch":
        raise UsageError(f"--scope patch: {flag} models are attacked on whole cases (--scope volume, their default)")
    model = load_tool_model(req.source)
    deployment = model.inference()
    if deployment:
        log.info(f"{model.name}: {deployment['text']}")
    if req.save_volumes:
        model.check_save_volumes()
    device = resolve_device(req.device)
    cases = model.load_cases(req.source.images, req.source.labels, req.cases, req.max_cases, device)
    out = writable_dir(req.out or f"rog_{tool}-{req.kind}")
    init_distributed()
    meta = Meta(label=req.label or model.name, cases_source="folders", cases_source_text=SOURCES["folders"],
                model=row(model.network, model.name, model.num_channels, model.patch or cases[0].x.shape[2:]),
                class_names=model.class_names, deployment=deployment or None)
    if tool == "run":
        _add_run(meta, RunDir(req.source.run))
    net = model.network.to(device)  # after counting: the FLOP count runs on the CPU
    keep = ScanWriter(ResultsDir(out), model) if req.save_volumes else None
    sweep = _sweep(req, net, model.num_classes, model.patch, None, out, meta=meta,  # cases carry their spacing
                   weights=file_hash(model.weights) if model.weights else None, window=model.window, keep=keep)
    return SweepResult(sweep.run(cases), out)
