"""One benchmark of one model, from the command line or the demo: choose the cases, describe
the model for the report, load the cases and run the attacks or the corruptions."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rog.bench.cases import SOURCES, default_cases, load_bench_cases
from rog.bench.records import file_hash
from rog.bench.corruption import CorruptionConfig, CorruptionSweep
from rog.bench.runner import Benchmark, BenchmarkConfig
from rog.models.summary import model_row, row
from rog.plan import Plan
from rog.rundir import RunDir


def _prepare(model: nn.Module, plan: Plan, data, scope: str, run: RunDir | None, model_name: str | None,
             names: list[str] | None, max_cases: int | None, label: str | None, device) -> tuple[list, dict]:
    """(cases to evaluate, metadata for the report): `names`, else the default cases, at most
    `max_cases`; the metadata names the model, its summary, class names and the cases' source."""
    source = "given"
    if not names:
        names, source = default_cases(data, run)
    names = names[:max_cases] if max_cases else names
    if not names:
        raise FileNotFoundError(f"{data}: no labelled preprocessed case to evaluate")
    name = model_name or (run.read_config().get("model", plan.model) if run else plan.model)
    meta = {"label": label or (run.name if run else name), "run": str(Path(run).resolve()) if run else None,
            "data": str(Path(data).resolve()), "cases_source": source, "cases_source_text": SOURCES[source],
            "model": model_row(model, plan, name),
            "class_names": [plan.labels.get(str(k), f"class {k}") for k in range(1, plan.num_classes)],
            "test": run.read_test_eval() if run else None,
            "seed": run.read_config().get("seed") if run else None}
    return load_bench_cases(data, names, scope, plan.val_patch_size, device), meta


def benchmark(model: nn.Module, plan: Plan, data: str | Path, out: str | Path, config: BenchmarkConfig,
              run: RunDir | None = None, model_name: str | None = None, weights: str | Path | None = None,
              names: list[str] | None = None, max_cases: int | None = None, label: str | None = None,
              device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Attack `model` (built from `plan`, weights from the file `weights`) on the preprocessed
    folder `data`: `names`, else the default cases (`bench.cases`), at most `max_cases`.
    Writes OUT/results.json; returns the results document ({} on ranks > 0)."""
    cases, meta = _prepare(model, plan, data, config.scope, run, model_name, names, max_cases, label, device)
    return Benchmark(model.to(device), plan.num_classes, config, out, plan.val_patch_size, progress=progress,
                     meta=meta, weights=file_hash(weights)).run(cases)


def corruption_sweep(model: nn.Module, plan: Plan, data: str | Path, out: str | Path, config: CorruptionConfig,
                     run: RunDir | None = None, model_name: str | None = None, weights: str | Path | None = None,
                     names: list[str] | None = None, max_cases: int | None = None, label: str | None = None,
                     device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """The corruption sweep of `model` on whole cases, with the same case selection as
    `benchmark`. Writes OUT/results.json; returns the results document ({} on ranks > 0)."""
    cases, meta = _prepare(model, plan, data, "volume", run, model_name, names, max_cases, label, device)
    return CorruptionSweep(model.to(device), plan.num_classes, config, out, plan.val_patch_size,
                           plan.target_spacing, progress=progress, meta=meta, weights=file_hash(weights)).run(cases)


def external(kind: str, model, cases: list, out: str | Path, config, label: str | None = None,
             device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Attack (`kind` "attack") or corrupt ("corruption") a model of another tool
    (`rog.external.ExternalModel`) on its own preprocessed `cases`, whole, through rog's
    sliding window with the model's patch size, mirroring and tiling style. Returns the results document."""
    net = model.network
    meta = {"label": label or model.name, "run": None, "data": None, "cases_source": "folders",
            "cases_source_text": SOURCES["folders"],
            "model": row(net, model.name, model.num_channels, model.patch),
            "class_names": model.class_names, "test": None, "seed": None}
    net = net.to(device)  # after counting: the FLOP count runs on the CPU
    common = dict(progress=progress, meta=meta, weights=file_hash(model.weights), window=model.window)
    if kind == "attack":
        return Benchmark(net, model.num_classes, config, out, model.patch, **common).run(cases)
    return CorruptionSweep(net, model.num_classes, config, out, model.patch, model.spacing, **common).run(cases)
