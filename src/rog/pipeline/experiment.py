"""The paper's experiment on any dataset folder (`rog demo`, `rog run-paper`): check, plan,
preprocess; per training seed ROG clean, ROG fine-tuned with Free AT and the DynUNet
baseline, their test scores and attack sweeps; the corruption sweep (and, where the settings
name artefacts, the worst-case artefact sweep) on the first seed's models; the atlas-transfer
reference; the report. Each stage prints where it is and is
skipped when its output exists, so an interrupted experiment resumes."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from rog.bench import ArtefactConfig, BenchmarkConfig, CorruptionConfig
from rog.data.check import check_dataset
from rog.data.dataset import load_dataset
from rog.data.preprocess import preprocess_dataset
from rog.errors import RogError
from rog.messages import log, quieter
from rog.pipeline.sources import RunSource
from rog.pipeline.stages import atlas_reference, ensure_plan, test_scores, train_and_decide
from rog.pipeline.sweeps import SweepRequest, run_sweep
from rog.rundir import Workdir
from rog.train.defences import defence_class
from rog.train.trainer import TrainConfig


@dataclass(frozen=True)
class DefenceSpec:
    """The defended model's recipe, `rog train`'s adversarial options for its fine-tuning from
    the clean run (the defaults are plain Free AT): `adv` the defence (`rog.train.defences`),
    `epochs` before Free AT's division by m, `lr` and `iterations` per epoch (None: the clean
    training's), `warmup` of eps, the clean/adversarial mix `clean_weight`, `trades`, and the
    checkpoint selection `select`."""

    adv: str = "free"
    epochs: int = 20
    lr: float | None = None
    iterations: int | None = None
    warmup: float = 0.0
    clean_weight: float = 0.0
    trades: float = 0.0
    select: str = "patch"

    def config(self, base: TrainConfig, init_from: str) -> TrainConfig:
        """The fine-tuning's `TrainConfig`: the clean training's `base` with this recipe,
        starting from the weights of the run at `init_from`."""
        return replace(base, adv=self.adv, epochs=self.epochs, lr=self.lr or base.lr,
                       iterations=self.iterations or base.iterations, eps_warmup=self.warmup,
                       clean_weight=self.clean_weight, trades=self.trades, select=self.select, init_from=init_from)


@dataclass(frozen=True)
class Settings:
    """The experiment's budgets; the defaults are the synthetic demo's."""

    cases: int = 12  # synthetic task only: cases and in-plane size
    size: tuple[int, int] = (40, 56)
    width: int = 8
    epochs: int = 40
    iterations: int | None = 10
    batch_size: int | None = 2
    lr: float = 3e-3
    defence: DefenceSpec = DefenceSpec()  # the rog_free model's fine-tuning
    eps: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0)
    iters: int = 5
    queries: int = 100
    attack_cases: int | None = None
    corruptions: tuple[str, ...] = ("all",)
    severities: tuple[int, ...] = (1, 3, 5)
    # the worst-case artefact sweep (`rog artefact`) on the first seed's models: () for none;
    # at `severities`, with this many random draws and APGD iterations (one run, from the worst draw)
    artefacts: tuple[str, ...] = ()
    artefact_draws: int = 5
    artefact_iters: int = 5
    seeds: int = 1  # each model trained with seeds first_seed .. first_seed + seeds - 1
    first_seed: int = 0  # above 0 for fresh seeds beside a finished run (`benchmarks/defence_recipes.py`)
    spacing: float | None = None  # target spacing override in mm (None: the median spacing)

    def train_config(self, seed: int, device: str) -> TrainConfig:
        """The clean training of seed `seed` on these budgets (the fine-tunings start from it)."""
        return TrainConfig(epochs=self.epochs, iterations=self.iterations, batch_size=self.batch_size, lr=self.lr,
                           patience=min(max(self.epochs // 4, 2), 50), seed=seed, device=device)


# the paper's settings (REFERENCE section 3 and 5), for `rog run-paper` on a real MSD task
PAPER = Settings(width=64, epochs=1000, iterations=None, batch_size=None, lr=1e-3,
                 defence=DefenceSpec(epochs=1000), queries=500, attack_cases=None)
MODELS = ("rog_clean", "rog_free", "dynunet")


@dataclass
class ExperimentResult:
    report: Path | None  # report.html; None when the dataset check failed
    problems: list  # the dataset's problems (nothing else ran when there are any)
    summary: object = None  # the report's `ReportSummary`


def run_experiment(data: Path, workdir: Path, s: Settings, device: str = "auto") -> ExperimentResult:
    """Run every stage of the experiment, skipping those whose output exists.

    Args:
        data: a dataset folder (MSD or nnU-Net v2).
        workdir: where its stages write.
        s: the budgets (`Settings`; the demo's in `rog.demo`, the paper's `PAPER`).
        device: "auto", "cpu", "cuda", ...

    Returns:
        The report's path and summary, or the dataset's problems (and nothing run).
    """
    t0 = time.time()
    wd = Workdir(Path(workdir))

    def stage(text: str) -> None:
        log.info(f"[{time.time() - t0:6.0f}s] {text}")

    stage("checking the dataset")
    problems = check_dataset(data)
    if problems:
        return ExperimentResult(None, problems)
    ds = load_dataset(data)
    stage(f"plan -> {wd.plan}")
    plan = ensure_plan(ds, wd, width=s.width, spacing=s.spacing)
    stage(f"preprocessing -> {wd.preprocessed}")
    preprocess_dataset(ds, plan, wd.preprocessed, include_test=True, progress=False)

    results = []
    for seed in range(s.first_seed, s.first_seed + s.seeds):
        base = s.train_config(seed, device)
        runs = {"rog_clean": base,
                "rog_free": s.defence.config(base, str(wd.run(f"rog_clean-s{seed}"))),
                "dynunet": replace(base, model="dynunet")}
        for name, config in runs.items():
            _train(wd, plan, f"{name}-s{seed}", config, stage)
            _test(wd, ds, f"{name}-s{seed}", stage)
        attack = BenchmarkConfig(eps=list(s.eps), attacks=["standard", "pgd"], iters=[s.iters], queries=[s.queries])
        corruption = CorruptionConfig(corruptions=list(s.corruptions), severities=list(s.severities))
        artefact = ArtefactConfig(artefacts=list(s.artefacts), severities=list(s.severities), draws=s.artefact_draws,
                                  iters=s.artefact_iters, restarts=1) if s.artefacts else None
        for name in runs:
            results.append(_sweep(wd, name, seed, attack, s, stage, device,
                                  f"attack sweep eps {list(s.eps)} (standard ensemble + PGD)"))
            if seed == s.first_seed:  # the artefact sweep is not part of the seed study: one seed keeps the budget
                results.append(_sweep(wd, name, seed, corruption, s, stage, device,
                                      f"corruption sweep {list(s.corruptions)} at severities {list(s.severities)}"))
                if artefact:
                    results.append(_sweep(wd, name, seed, artefact, s, stage, device,
                                          f"worst-case artefacts {list(s.artefacts)} at severities "
                                          f"{list(s.severities)}"))
    fresh = not wd.atlas_transfer.is_file()
    if fresh:
        stage(f"atlas-transfer reference (the training labels' majority vote through world coordinates) -> "
              f"{wd.atlas_transfer}")
    reference = atlas_reference(wd, ds, plan.num_classes)
    if fresh and reference is not None:
        log.info(f"    test Dice with no learning: {reference.dice:.3f}")
    stage("report")
    from rog.report.build import build_report
    summary = build_report(results, wd.root / "report", baseline="dynunet", gain=("rog_free", "rog_clean"),
                           reference=reference)
    return ExperimentResult(wd.root / "report" / "report.html", [], summary)


# what makes a run the experiment's model: a run in the work directory trained otherwise is
# another model (a recipe changed since), never reused or resumed under these settings
RECIPE_FIELDS = ("model", "adv", "epochs", "iterations", "batch_size", "lr", "seed", "select", "eps_warmup",
                 "clean_weight", "trades")


def _train(wd: Workdir, plan, name: str, config: TrainConfig, stage) -> None:
    run = wd.run(name)
    if run.config.is_file():
        old, new = run.read_config(), {k: getattr(config, k) for k in RECIPE_FIELDS}
        new.update(model=config.model or plan.model)  # a run records the plan's model
        changed = [f"{k} {old.get(k)!r} there, {new[k]!r} here" for k in RECIPE_FIELDS if old.get(k) != new[k]]
        if changed:
            raise RogError(f"{run.config}: trained with other settings ({'; '.join(changed)}): the demo's recipe "
                           "changed since; give another work directory (its finished work is kept)")
    if run.postprocessing.is_file():
        stage(f"{name}: trained already ({run}), skipped")
        return
    title = defence_class(config.adv).title
    what = f"{title} fine-tuning" if config.init_from else title
    stage(f"{name}: {what} ({config.model or plan.model}) -> {run}")
    with quieter():  # nine runs' epoch lines would bury the demo's stages
        result = train_and_decide(plan, wd, name, config, resume=run.checkpoint("last").is_file())
    log.info(f"    best validation Dice {result.best_val_dice:.3f} after {result.epochs} epoch(s)")


def _test(wd: Workdir, ds, name: str, stage) -> None:
    run = wd.run(name)
    if run.test_eval.is_file():
        return
    stage(f"{name}: predicting and scoring the held-out test cases")
    scores = test_scores(wd, ds, name)
    if scores is None:
        log.info(f"    predictions in {run.test_predictions} (no test labels to score them)")
    else:
        log.info("    test Dice per class: " + ", ".join(f"{d:.3f}" if d is not None else "n/a"
                                                      for d in scores["mean_per_class"]["dice"]))


def _sweep(wd: Workdir, name: str, seed: int, config, s: Settings, stage, device: str, what: str) -> Path:
    """The sweep `config` of run NAME-sSEED into attacks/NAME-sSEED-FOLDER, unless finished
    there already; results labelled NAME (the report tells seeds apart by the run's recorded
    seed). Returns the results folder."""
    run = wd.run(f"{name}-s{seed}")
    req = SweepRequest(RunSource(run=run.path), config, max_cases=s.attack_cases, label=name, device=device)
    out = wd.results(f"{run.name}-{req.folder}")
    if out.finished():
        stage(f"{run.name}: {req.kind} results exist, skipped")
        return out.path
    stage(f"{run.name}: {what} -> {out}")
    run_sweep(replace(req, out=out.path))
    return out.path


def demo_data(workdir: Path, task: str, s: Settings) -> Path:
    """The demo's dataset folder in WORKDIR/data, written once: `task` "nuclei" (the brain
    templates and atlases the setup installed) or "synthetic" (`s.cases` CT-like phantoms)."""
    from rog.data.nuclei import make_nuclei_task
    from rog.data.synthetic import make_task
    data = Path(workdir) / "data" / ("Nuclei" if task == "nuclei" else "SynthCT")
    if not (data / "dataset.json").is_file():
        if task == "nuclei":
            log.info(f"writing the deep grey nuclei task (four brain templates) to {data}")
            make_nuclei_task(data)
        else:
            log.info(f"writing the synthetic CT-like task to {data}")
            make_task(data, kind="ct", cases=s.cases, test_cases=2, seed=0, size=s.size)
    return data
