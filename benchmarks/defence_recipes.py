"""Adversarial fine-tuning recipes on a demo task, chosen on validation and reported once on
test (issue 35).

    python benchmarks/defence_recipes.py DEMO_WORKDIR OUT_ROOT RECIPE [RECIPE ...] [--task nuclei|synthetic]
        [--seeds 0 1 2] [--sensitivity]

DEMO_WORKDIR: a `rog demo` work directory of `--task` (default nuclei); what it lacks for
`--seeds` (consecutive; 3 4 5 are fresh seeds beside the demo's 0 1 2) is run first, by the
demo's own stages at the demo's settings. Its clean ROG runs are the initial weights of every
recipe and its other runs and results are reused, not retrained. A recipe is the task's demo
`DefenceSpec` with the fields of `RECIPES` changed; the one equal to the demo's own is the
demo's rog_free runs. For each other RECIPE and seed, OUT_ROOT/RECIPE/runs/rog_free-sSEED is
fine-tuned from the demo's rog_clean-sSEED (inheriting its split). Then:

1. **Validation.** Every recipe's runs and the clean runs are scored on their validation
   cases, whole volumes, as the test cases are scored: clean Dice and APGD-CE's worst-case
   Dice at 8/255 (`VALIDATION`). A recipe's score is the mean over seeds of the mean of the
   two (the robust checkpoint selection's score, `rog.train.selection`). No test case is read
   in this stage: the cases are the runs' own validation split (`validation_request`).
2. **Choice.** The highest validation score (`choose`).
3. **Test, once.** The demo's test protocol (`run_experiment`: whole-case test Dice, the
   standard ensemble + PGD at the demo's eps, the report with the seeds' AUC gain) for the
   chosen recipe only. With `--sensitivity`, the same for every recipe, printed apart and
   labelled as a sensitivity table that chose nothing.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rog.bench import BenchmarkConfig
from rog.demo import DEMOS
from rog.pipeline.experiment import DefenceSpec, Settings, demo_data, run_experiment
from rog.pipeline.sources import RunSource
from rog.pipeline.stages import train_and_decide
from rog.pipeline.sweeps import SweepRequest, run_sweep
from rog.plan import Plan
from rog.rundir import ResultsDir, RunDir, Workdir
from rog.train.trainer import TrainConfig

# each: the task's plain Free AT (`PLAIN`) with these fields changed. Not the demo's own recipe:
# that moves with each choice (issue 27's lr, issue 35's selection), and a recipe must not move with it
RECIPES = {
    "free": {},  # the nuclei demo's Free AT before issue 27: fine-tuning at the clean training's lr 1e-2
    "free_lr3e-3": {"lr": 3e-3},
    "free_lr1e-3": {"lr": 1e-3},  # the nuclei demo's from issue 27 to issue 35
    "free_warm_mix": {"warmup": 0.3, "clean_weight": 0.5},
    "free_lr1e-3_warm_mix": {"lr": 1e-3, "warmup": 0.3, "clean_weight": 0.5},
    "trades": {"lr": 1e-3, "warmup": 0.3, "trades": 1.0},
    # PGD-AT (5 steps) for comparison: epochs are not divided by m, so 10 epochs of 10 batches, the
    # same 100 optimiser updates as Free AT's, each after 5 attack steps (about 6x the compute)
    "pgd_lr1e-3": {"lr": 1e-3, "adv": "pgd"},
    # the same 100 updates in 5 epochs of 4 iterations, so that the selection has 5 epochs to choose
    # from (the nuclei demo's since issue 35: chosen on validation)
    "free_lr1e-3_robust": {"lr": 1e-3, "select": "robust", "iterations": 4, "epochs": 25},
}
# plain Free AT at the clean training's lr, for the epochs of each demo before any recipe was chosen
PLAIN = {"nuclei": DefenceSpec(epochs=10), "synthetic": DefenceSpec(epochs=20)}
SHARED = ["data", "fingerprint.json", "plan.json", "preprocessed", "atlas_transfer.json"]
# the validation protocol: whole validation volumes, clean and under APGD-CE at the demo's middle eps
VALIDATION = BenchmarkConfig(eps=[8.0], attacks=["apgd-ce"], iters=[5], scope="volume")


@dataclass
class Score:
    """One run on its validation cases: whole-volume clean Dice, worst-case Dice under
    `VALIDATION`, and their mean (the ranking's score)."""

    clean: float
    attacked: float

    @property
    def score(self) -> float:
        return (self.clean + self.attacked) / 2


def task_settings(task: str, seeds: list[int]) -> Settings:
    """The full demo's settings of `task` for the consecutive `seeds`."""
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise SystemExit(f"--seeds {' '.join(map(str, seeds))}: the seeds must be consecutive")
    return replace(DEMOS[(task, False)], seeds=len(seeds), first_seed=seeds[0])


def recipe_settings(s: Settings, task: str, recipe: str) -> Settings:
    """`s` (the settings of `task`) with the rog_free model fine-tuned by `recipe`."""
    return replace(s, defence=replace(PLAIN[task], **RECIPES[recipe]))


def linked_workdir(demo: Path, out: Path, own: bool) -> Workdir:
    """OUT with links to the demo's inputs and to every run and result, but the Free AT ones
    unless the recipe is the demo's `own`."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "attacks").mkdir(exist_ok=True)
    for name in SHARED:
        if (demo / name).exists() and not (out / name).exists():
            os.symlink((demo / name).resolve(), out / name)
    for kind in ("runs", "attacks"):
        for d in (demo / kind).iterdir():
            if (own or not d.name.startswith("rog_free")) and not (out / kind / d.name).exists():
                os.symlink(d.resolve(), out / kind / d.name)
    return Workdir(out)


def fine_tune_config(s: Settings, seed: int, init_from: str) -> TrainConfig:
    """The fine-tuning of `s.defence` from the run at `init_from`, on the demo's clean budget."""
    return s.defence.config(s.train_config(seed, "cpu"), init_from)


def fine_tune(wd: Workdir, s: Settings, seed: int) -> RunDir:
    """WORKDIR/runs/rog_free-sSEED, fine-tuned by `s.defence` from rog_clean-sSEED (skipped where done)."""
    run = wd.run(f"rog_free-s{seed}")
    if not run.postprocessing.is_file():
        train_and_decide(Plan.load(wd.plan), wd, run.name, fine_tune_config(s, seed, str(wd.run(f"rog_clean-s{seed}"))),
                         resume=run.checkpoint("last").is_file(), progress=False)
    return run


def validation_request(run: RunDir, out: Path) -> SweepRequest:
    """The validation sweep of `run`: its own split's validation cases, never the test cases."""
    split = run.read_splits()
    if not split or not split.get("val"):
        raise SystemExit(f"{run.splits}: no validation cases to rank recipes on")
    return SweepRequest(RunSource(run=run.path), VALIDATION, cases=list(split["val"]), out=out, device="cpu",
                        progress=False)


def validate(run: RunDir, out: Path) -> Score:
    """`run` scored on its validation cases (results in `out`, reused when finished)."""
    folder = ResultsDir(out)
    results = folder.read() if folder.finished() else run_sweep(validation_request(run, out)).results
    (eps,) = results.summary.eps.values()
    return Score(results.summary.clean_dice, eps.worst_case_dice)


def choose(scores: dict[str, list[Score]]) -> str:
    """The recipe with the highest mean validation score over its seeds (the first on ties)."""
    return max(scores, key=lambda r: np.mean([s.score for s in scores[r]]))


def test_line(name: str, out: Path, task: str, s: Settings) -> str:
    """The demo's test figures of recipe `name`, whose work directory is `out` (`s`: the
    settings of `task` with that recipe)."""
    data = demo_data(out, task, s)
    # the corruption sweeps are the demo's (linked), not the figures compared: one level for a new rog_free
    r = run_experiment(data, out, replace(s, corruptions=("noise",), severities=(1,)), device="cpu").summary
    test = r.learning.models if r.learning else {}
    worst, gain = r.seeds.groups["rog_free"].eps, r.seeds.gain
    return (f"{name}: whole-case clean test Dice rog_clean {test['rog_clean'].mean:.3f} +- {test['rog_clean'].sd:.3f}, "
            f"defended {test['rog_free'].mean:.3f} +- {test['rog_free'].sd:.3f}; worst-case Dice "
            + ", ".join(f"{e}/255 {v.mean:.3f} +- {v.sd:.3f}" for e, v in worst.items())
            + f"; AUC gain {gain.gain:.3f} [{gain.interval[0]:.3f}, {gain.interval[1]:.3f}]")


def main(demo: Path, root: Path, names: list[str], task: str, seeds: list[int], sensitivity: bool) -> str:
    s = task_settings(task, seeds)
    run_experiment(demo_data(demo, task, s), demo, s, device="cpu")  # the demo's runs of these seeds, where missing
    clean = {seed: validate(RunDir(demo / "runs" / f"rog_clean-s{seed}"), root / "validation" / f"rog_clean-s{seed}")
             for seed in seeds}
    print("validation (whole volumes of each run's validation split; score = mean of clean and APGD-CE 8/255 Dice)")
    print("  rog_clean: " + _row(list(clean.values())), flush=True)
    scores = {}
    for name in names:
        r = recipe_settings(s, task, name)
        wd = linked_workdir(demo, root / name, own=r.defence == s.defence)
        scores[name] = [validate(fine_tune(wd, r, seed), root / "validation" / f"{name}-s{seed}") for seed in seeds]
        print(f"  {name}: " + _row(scores[name]), flush=True)
    chosen = choose(scores)
    print(f"chosen on validation: {chosen}")
    print("test, the chosen recipe only: " + test_line(chosen, root / chosen, task, recipe_settings(s, task, chosen)), flush=True)
    if sensitivity:
        print("sensitivity (test figures of every recipe; they chose nothing):")
        for name in names:
            print("  " + test_line(name, root / name, task, recipe_settings(s, task, name)), flush=True)
    return chosen


def _row(scores: list[Score]) -> str:
    mean = lambda v: f"{np.mean(v):.3f} +- {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"  # noqa: E731
    return (f"clean {mean([s.clean for s in scores])}, APGD-CE 8/255 {mean([s.attacked for s in scores])}, "
            f"score {mean([s.score for s in scores])}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("demo", type=Path)
    p.add_argument("root", type=Path)
    p.add_argument("recipes", nargs="+", choices=list(RECIPES))
    p.add_argument("--task", choices=["nuclei", "synthetic"], default="nuclei")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sensitivity", action="store_true")
    a = p.parse_args()
    main(a.demo, a.root, a.recipes, a.task, a.seeds, a.sensitivity)
