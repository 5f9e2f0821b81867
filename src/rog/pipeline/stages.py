"""The re-runnable stages that fill one dataset's work directory (the layout:
`rog.rundir.Workdir`): fingerprint.json, plan.json, preprocessed/, runs/NAME/ (training and
the post-processing decision, the test scores) and the atlas-transfer reference. Each stage
skips work whose output exists.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rog.atomic import write_json
from rog.checkpoint import CheckpointError
from rog.data.dataset import Dataset, load_dataset
from rog.data.fingerprint import compute_fingerprint
from rog.data.preprocess import preprocess_dataset
from rog.errors import read_json_object
from rog.plan import PlanError, Plan, make_plan
from rog.rundir import Workdir


def ensure_fingerprint(ds: Dataset, wd: Workdir, workers: int = 1, force: bool = False) -> dict:
    if wd.fingerprint.is_file() and not force:
        return read_json_object(wd.fingerprint)
    fp = compute_fingerprint(ds, workers=workers)
    write_json(wd.fingerprint, fp)
    return fp


def ensure_plan(ds: Dataset, wd: Workdir, workers: int = 1, force: bool = False, **overrides) -> Plan:
    """Load plan.json, or make it from the fingerprint (`overrides`: model, width, spacing; None
    = the planner's default). An existing plan is kept only where it agrees with the
    overrides given: one that differs is refused, the field named (`force` plans again)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if wd.plan.is_file() and not force:
        plan = Plan.load(wd.plan)
        if plan.dataset != ds.name:  # e.g. an old demo folder reused for another task
            raise PlanError(f"{wd.plan}: the plan of dataset {plan.dataset!r}, not {ds.name!r}; "
                            "use another work directory")
        asked = make_plan(ensure_fingerprint(ds, wd, workers), **overrides) if overrides else plan
        differ = [k for k in ("model", "width", "target_spacing") if getattr(asked, k) != getattr(plan, k)]
        if differ:
            raise PlanError(f"{wd.plan}: exists with {', '.join(f'{k} {getattr(plan, k)}' for k in differ)}, not "
                            f"{', '.join(str(getattr(asked, k)) for k in differ)} as asked; `rog plan --force` plans "
                            "again (cases are then preprocessed again), or use another work directory")
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
              overwrite: bool = False) -> TrainResult:
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
        config = TrainConfig(**options)  # options that cannot go together fail before any work
        if run.path.is_dir() and any(p != run.splits for p in run.path.iterdir()):  # a prepared split is no run
            if not overwrite:
                raise CheckpointError(f"{run}: a run named {name!r} exists; --resume continues it, "
                                      "--overwrite deletes it and starts again")
            shutil.rmtree(run.path)
        plan = ensure_plan(ds, wd)
        if width:
            plan.width = width
    preprocess_dataset(ds, plan, wd.preprocessed, include_test=True, progress=progress)
    return train_and_decide(plan, wd, name, config, resume, progress, postprocessing)


@dataclass
class TrainResult:
    """What a training stage leaves: epochs run, the best checkpoint's validation score (clean
    Dice on centred patches, or with `--select robust` the mean of clean and attacked Dice on
    whole volumes: `selected_by`), and the post-processing decision (postprocessing.json: steps,
    whole-volume Dice without and with them; None when not decided here)."""

    epochs: int
    best_val_dice: float
    postprocessing: dict | None = None
    selected_by: str = "patch"
    folder: str | None = None  # the run's folder


def train_and_decide(plan: Plan, wd: Workdir, name: str, config, resume: bool = False, progress: bool = True,
                     postprocessing: bool = True) -> TrainResult:
    """Train WORKDIR/runs/NAME from the preprocessed cases; then (rank 0) reload the best
    checkpoint and decide post-processing on the whole validation volumes."""
    from rog.checkpoint import load_weights
    from rog.train.postprocessing import decide_for_run
    from rog.train.trainer import Trainer

    trainer = Trainer(plan, wd.preprocessed, wd.run(name), config, progress=progress)
    fitted = trainer.fit(resume=resume)
    result = TrainResult(fitted["epochs"], fitted["best_val_dice"], selected_by=config.select,
                         folder=str(wd.run(name).path))
    if postprocessing and trainer.rank == 0:
        load_weights(trainer.model, wd.run(name).checkpoint("best"))
        result.postprocessing = decide_for_run(trainer.model, plan, wd.preprocessed, wd.run(name), trainer.device,
                                               progress)
    return result


def test_scores(wd: Workdir, ds: Dataset, name: str) -> dict | None:
    """Predict the test cases with run NAME (its post-processing) into the run's
    test_predictions/ and score them against the test labels (`rog evaluate`'s summary, kept
    as the run's test_eval.json); None where the test cases have no labels. Skipped, and the
    summary read back, when the scores exist."""
    from rog.checkpoint import load_run
    from rog.evaluate.folders import evaluate_folders
    from rog.infer.predictor import predict_cases
    run = wd.run(name)
    if run.test_eval.is_file():
        return run.read_test_eval()
    model, plan, _ = load_run(run)
    predict_cases(model, plan, ds.test, run.test_predictions, steps=run.postprocessing_steps(), progress=False)
    labelled = [c for c in ds.test if c.label is not None]
    if not labelled:  # the MSD has no public test labels
        return None
    return evaluate_folders(labelled[0].label.parent, run.test_predictions, plan.num_classes, run.test_eval_stem)


def atlas_reference(wd: Workdir, ds: Dataset, num_classes: int):
    """The atlas-transfer reference on the labelled test cases (`rog.evaluate.atlas`), kept in
    the work directory and read back once computed; None without labelled test cases."""
    from rog.evaluate.atlas import AtlasReference, atlas_transfer
    if wd.atlas_transfer.is_file():
        return AtlasReference.from_json(read_json_object(wd.atlas_transfer))
    if not any(c.label is not None for c in ds.test):
        return None
    reference = atlas_transfer(ds.training, ds.test, num_classes)
    write_json(wd.atlas_transfer, reference.to_json())
    return reference
