"""The work directory of one dataset and the re-runnable stages that fill it.

fingerprint.json, plan.json and preprocessed/ (the layout: `rog.rundir.Workdir`); each stage
skips work whose output exists.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from rog.atomic import write_json
from rog.checkpoint import CheckpointError
from rog.data.dataset import Dataset, load_dataset
from rog.data.fingerprint import compute_fingerprint
from rog.data.preprocess import preprocess_dataset
from rog.plan import PlanError, Plan, make_plan
from rog.rundir import Workdir


def ensure_fingerprint(ds: Dataset, wd: Workdir, workers: int = 1, force: bool = False) -> dict:
    if wd.fingerprint.is_file() and not force:
        return json.loads(wd.fingerprint.read_text())
    fp = compute_fingerprint(ds, workers=workers)
    write_json(wd.fingerprint, fp)
    return fp


def ensure_plan(ds: Dataset, wd: Workdir, workers: int = 1, force: bool = False, **overrides) -> Plan:
    """Load plan.json, or make it from the fingerprint (`overrides`: model, width, spacing)."""
    if wd.plan.is_file() and not force:
        plan = Plan.load(wd.plan)
        if plan.dataset != ds.name:  # e.g. an old demo folder reused for another task
            raise PlanError(f"{wd.plan}: the plan of dataset {plan.dataset!r}, not {ds.name!r}; "
                            "use another work directory")
        return plan
    plan = make_plan(ensure_fingerprint(ds, wd, workers), **overrides)
    plan.save(wd.plan)
    return plan


def run_preprocessing(dataset: str | Path, workdir: str | Path | None = None, workers: int = 1,
                      include_test: bool = True) -> tuple[Workdir, Plan, list[str]]:
    ds = load_dataset(dataset)
    wd = Workdir.for_dataset(ds, workdir)
    plan = ensure_plan(ds, wd, workers)
    done = preprocess_dataset(ds, plan, wd.preprocessed, workers=workers, include_test=include_test)
    return wd, plan, done


def train_run(dataset: str | Path, workdir: str | Path | None, name: str, options: dict, resume: bool = False,
              progress: bool = True, postprocessing: bool = True, width: int | None = None,
              overwrite: bool = False) -> dict:
    """Preprocess if needed, train into WORKDIR/runs/NAME (the plan's width overridable), then
    decide post-processing on the validation cases. `options`: TrainConfig fields to set.

    An existing run is never overwritten by accident: `resume` continues it with its own
    config.json and plan.json, changed only by `options` (`width` is not used), `overwrite`
    deletes it and starts again; without either, an existing run is an error."""
    from rog.train.trainer import TrainConfig
    ds = load_dataset(dataset)
    wd = Workdir.for_dataset(ds, workdir)
    run = wd.run(name)
    if resume:
        if not run.checkpoint("last").is_file():
            raise CheckpointError(f"{run.checkpoint('last')}: not found, nothing to resume")
        plan, config = Plan.load(run.plan), TrainConfig.from_dict(run.read_config(), str(run.config), **options)
    else:
        if run.path.is_dir() and any(run.path.iterdir()):
            if not overwrite:
                raise CheckpointError(f"{run}: a run named {name!r} exists; --resume continues it, "
                                      "--overwrite deletes it and starts again")
            shutil.rmtree(run.path)
        plan, config = ensure_plan(ds, wd), TrainConfig(**options)
        if width:
            plan.width = width
    preprocess_dataset(ds, plan, wd.preprocessed, include_test=True, progress=progress)
    return train_and_decide(plan, wd, name, config, resume, progress, postprocessing)


def train_and_decide(plan: Plan, wd: Workdir, name: str, config, resume: bool = False, progress: bool = True,
                     postprocessing: bool = True) -> dict:
    """Train WORKDIR/runs/NAME from the preprocessed cases; then (rank 0) reload the best
    checkpoint and decide post-processing on the whole validation volumes."""
    from rog.checkpoint import load_weights
    from rog.train.postprocessing import decide_for_run
    from rog.train.trainer import Trainer

    trainer = Trainer(plan, wd.preprocessed, wd.run(name), config, progress=progress)
    result = trainer.fit(resume=resume)
    if postprocessing and trainer.rank == 0:
        load_weights(trainer.model, wd.run(name).checkpoint("best"))
        result["postprocessing"] = decide_for_run(trainer.model, plan, wd.preprocessed, wd.run(name),
                                                  trainer.device)
    return result
