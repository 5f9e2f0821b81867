"""`rog demo`: the paper's experiment end to end, by default on real anatomy.

Tasks: `nuclei` (default; the deep grey nuclei of four brain templates, `rog.data.nuclei`,
planned at 2 mm so that three seeds fit the CPU budget) and `synthetic` (the embedded CT-like
phantoms). Stages: data -> check -> plan -> preprocess -> for each seed: ROG clean -> ROG
fine-tuned with Free AT -> DynUNet baseline with the clean budget -> predictions and scores
on the held-out test cases -> attack sweep (standard AutoAttack ensemble plus PGD, patch
scope) on all three; a short corruption sweep (scanner artefacts, whole cases) on the first
seed's models -> report with mean +- sd over seeds. Each stage prints where it is and is
skipped when its output exists, so an interrupted demo resumes. The budgets are a
scaled-down version of the paper's (CPU minutes, not GPU days); `run-paper` has the paper's
settings.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from rog.data.check import check_dataset
from rog.data.dataset import load_dataset
from rog.data.preprocess import preprocess_dataset
from rog.data.nuclei import make_nuclei_task
from rog.data.synthetic import make_task
from rog.train.trainer import TrainConfig
from rog.rundir import Workdir
from rog.workdir import ensure_plan, train_and_decide


@dataclass(frozen=True)
class DemoSettings:
    cases: int = 12
    size: tuple[int, int] = (40, 56)
    width: int = 8
    epochs: int = 40
    iterations: int | None = 10
    batch_size: int | None = 2
    lr: float = 3e-3
    free_epochs: int = 20  # Free AT fine-tuning epochs before division by m
    eps: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0)
    iters: int = 5
    queries: int = 100
    attack_cases: int | None = None
    corruptions: tuple[str, ...] = ("all",)
    severities: tuple[int, ...] = (1, 3, 5)
    seeds: int = 1  # each model trained with seeds 0 .. seeds-1
    spacing: float | None = None  # target spacing override in mm (None: the median spacing)


SYNTHETIC = DemoSettings()
SYNTHETIC_QUICK = DemoSettings(cases=6, size=(24, 32), epochs=6, iterations=4, free_epochs=5, queries=10,
                               attack_cases=2, corruptions=("noise", "blur", "motion", "anisotropy"),
                               severities=(2, 5), seeds=2)
NUCLEI = DemoSettings(width=8, spacing=2.0, epochs=25, iterations=10, batch_size=4, lr=1e-2, free_epochs=10,
                      queries=25, seeds=3)
# one seed: the quick run must fit 3 minutes on the slower 2-core machine (an EPYC without
# AVX-512 took 5 min 16 s with two); the seed study is the full demo's
NUCLEI_QUICK = replace(NUCLEI, epochs=5, iterations=6, free_epochs=5, eps=(8.0, 16.0), queries=10, seeds=1,
                       corruptions=("noise", "blur", "motion", "anisotropy"), severities=(2, 5))
DEMOS = {("nuclei", False): NUCLEI, ("nuclei", True): NUCLEI_QUICK,
         ("synthetic", False): SYNTHETIC, ("synthetic", True): SYNTHETIC_QUICK}
# the paper's settings (REFERENCE section 3 and 5), for `rog run-paper` on a real MSD task
PAPER = DemoSettings(width=64, epochs=1000, iterations=None, batch_size=None, lr=1e-3, free_epochs=1000,
                     queries=500, attack_cases=None)


def run_demo(workdir: Path, quick: bool = False, task: str = "nuclei", settings: DemoSettings | None = None) -> int:
    s = settings or DEMOS[task, quick]
    if task == "nuclei":
        data = Path(workdir) / "data" / "Nuclei"
        if not (data / "dataset.json").is_file():
            print(f"writing the deep grey nuclei task (four brain templates) to {data}", flush=True)
            make_nuclei_task(data)
    else:
        data = Path(workdir) / "data" / "SynthCT"
        if not (data / "dataset.json").is_file():
            print(f"writing the synthetic CT-like task to {data}", flush=True)
            make_task(data, kind="ct", cases=s.cases, test_cases=2, seed=0, size=s.size)
    return run_experiment(data, Path(workdir), s)


def run_experiment(data: Path, workdir: Path, s: DemoSettings, device: str = "auto") -> int:
    """The experiment on any dataset folder: plan, preprocess, three models, test scores,
    attack sweep, report. Every stage is skipped when its output exists."""
    t0 = time.time()
    wd = Workdir(Path(workdir))

    def stage(text: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {text}", flush=True)

    stage("checking the dataset")
    problems = check_dataset(data)
    if problems:
        print("\n".join(map(str, problems)))
        return 1
    ds = load_dataset(data)
    stage(f"plan -> {wd.plan}")
    plan = ensure_plan(ds, wd, width=s.width, spacing=s.spacing)
    stage(f"preprocessing -> {wd.preprocessed}")
    preprocess_dataset(ds, plan, wd.preprocessed, include_test=True, progress=False)

    results = []
    for seed in range(s.seeds):
        base = TrainConfig(epochs=s.epochs, iterations=s.iterations, batch_size=s.batch_size, lr=s.lr,
                           patience=min(max(s.epochs // 4, 2), 50), seed=seed, device=device)
        runs = {
            "rog_clean": base,
            "rog_free": replace(base, adv="free", epochs=s.free_epochs, init_from=str(wd.run(f"rog_clean-s{seed}"))),
            "dynunet": replace(base, model="dynunet"),
        }
        for name, config in runs.items():
            _train(wd, plan, f"{name}-s{seed}", config, stage)
            _test_eval(wd, ds, f"{name}-s{seed}", stage)
        for name in runs:
            results.append(_attack(wd, name, seed, s, stage, base.device))
            if seed == 0:  # the artefact sweep is not part of the seed study: one seed keeps the budget
                results.append(_corrupt(wd, name, seed, s, stage, base.device))
    reference = _atlas_transfer(wd, ds, plan.num_classes, stage)
    stage("report")
    from rog.report.build import build_report
    summary = build_report(results, wd.root / "report", baseline="dynunet", gain=("rog_free", "rog_clean"),
                           reference=reference)
    for name, g in summary["seeds"]["groups"].items():
        e8 = g["eps"].get("8.0", {})
        c = summary["corruptions"].get(name)
        print(f"    {name:<10} clean Dice {_pm(g['clean_dice'])}  worst-case Dice at 8/255 {_pm(e8)}  "
              f"AUC {_pm(g['auc_worst_case'])}" + (f"  mean corruption Dice {c['mean_corruption_dice']:.3f}" if c else ""))
    if summary["seeds"].get("gain"):
        print("    " + summary["seeds"]["gain"]["text"])
    stage(f"done: open {wd.root / 'report' / 'report.html'}")
    return 0


def _atlas_transfer(wd: Workdir, ds, num_classes: int, stage) -> dict | None:
    """The atlas-transfer reference on the labelled test cases (computed once), or None."""
    import json
    from rog.atomic import write_json
    from rog.evaluate.atlas import atlas_transfer
    if wd.atlas_transfer.is_file():
        return json.loads(wd.atlas_transfer.read_text())
    if not any(c.label is not None for c in ds.test):
        return None
    stage(f"atlas-transfer reference (the training labels' majority vote through world coordinates) -> "
          f"{wd.atlas_transfer}")
    reference = atlas_transfer(ds.training, ds.test, num_classes)
    write_json(wd.atlas_transfer, reference)
    print(f"    test Dice with no learning: {reference['dice']:.3f}")
    return reference


def _pm(stat: dict) -> str:
    """'mean +- sd' of a seed statistic (the mean alone for one seed)."""
    if not stat:
        return "n/a"
    return f"{stat['mean']:.3f}" + (f" +- {stat['sd']:.3f}" if stat["n"] > 1 else "")


def _train(wd: Workdir, plan, name: str, config: TrainConfig, stage) -> None:
    run = wd.run(name)
    if run.postprocessing.is_file():
        stage(f"{name}: trained already ({run}), skipped")
        return
    what = {"free": "Free AT fine-tuning", None: "training"}[config.adv]
    stage(f"{name}: {what} ({config.model or plan.model}) -> {run}")
    result = train_and_decide(plan, wd, name, config, resume=run.checkpoint("last").is_file())
    print(f"    best validation Dice {result['best_val_dice']:.3f} after {result['epochs']} epoch(s)")


def _test_eval(wd: Workdir, ds, name: str, stage) -> None:
    from rog.checkpoint import load_run
    from rog.evaluate.folders import evaluate_folders
    from rog.infer.predictor import predict_cases
    run = wd.run(name)
    if run.test_eval.is_file():
        return
    stage(f"{name}: predicting and scoring the held-out test cases")
    model, plan, _ = load_run(run)
    predict_cases(model, plan, ds.test, run.test_predictions, steps=run.postprocessing_steps(), progress=False)
    labelled = [c for c in ds.test if c.label is not None]
    if not labelled:  # the MSD has no public test labels
        print(f"    predictions in {run.test_predictions} (no test labels to score them)")
        return
    summary = evaluate_folders(run.test_predictions, labelled[0].label.parent, plan.num_classes, run.test_eval_stem)
    print("    test Dice per class: " + ", ".join(f"{d:.3f}" if d is not None else "n/a"
                                                  for d in summary["mean"]["dice"]))


def _attack(wd: Workdir, name: str, seed: int, s: DemoSettings, stage, device: str = "auto") -> Path:
    from rog.bench import BenchmarkConfig
    from rog.bench.job import benchmark
    config = BenchmarkConfig(eps=list(s.eps), attacks=["standard", "pgd"], iters=[s.iters], queries=[s.queries])
    return _sweep(wd, name, seed, "patch", "attack", f"attack sweep eps {list(s.eps)} (standard ensemble + PGD)",
                  benchmark, config, s, stage, device)


def _corrupt(wd: Workdir, name: str, seed: int, s: DemoSettings, stage, device: str = "auto") -> Path:
    from rog.bench.corruption import CorruptionConfig
    from rog.bench.job import corruption_sweep
    config = CorruptionConfig(corruptions=list(s.corruptions), severities=list(s.severities))
    return _sweep(wd, name, seed, "corruptions", "corruption",
                  f"corruption sweep {list(s.corruptions)} at severities {list(s.severities)}", corruption_sweep,
                  config, s, stage, device)


def _sweep(wd: Workdir, name: str, seed: int, folder: str, kind: str, what: str, job, config, s: DemoSettings,
           stage, device: str) -> Path:
    """Run `job` (`bench.job.benchmark` or `corruption_sweep`) on run NAME-sSEED into
    attacks/NAME-sSEED-FOLDER, unless finished there already; results labelled NAME (the
    report tells seeds apart by the run's recorded seed). Returns the results folder."""
    from rog.checkpoint import load_run
    from rog.devices import resolve_device
    run = wd.run(f"{name}-s{seed}")
    out = wd.results(f"{run.name}-{folder}")
    if out.finished():
        stage(f"{run.name}: {kind} results exist, skipped")
        return out.path
    stage(f"{run.name}: {what} -> {out}")
    model, plan, _ = load_run(run)
    job(model, plan, wd.preprocessed, out.path, config, run=run, weights=run.weights(), max_cases=s.attack_cases,
        label=name, device=resolve_device(device))
    return out.path
