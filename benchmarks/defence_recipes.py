"""Adversarial fine-tuning recipes on the demo's real-anatomy task, each against the same clean
ROG seeds (issue 27's table).

    python benchmarks/defence_recipes.py DEMO_WORKDIR OUT_ROOT RECIPE [RECIPE ...]

DEMO_WORKDIR: a finished `rog demo` work directory (its clean ROG and DynUNet runs, their test
scores and attack results are reused, not retrained). For each RECIPE (a key of `RECIPES`),
OUT_ROOT/RECIPE gets links to those and `run_experiment` runs only what is new: the Free AT
fine-tuning of each seed with the recipe's options, its whole-case test scores, its attack
sweep (the demo's: standard ensemble + PGD at 4-16/255) and the report with the seeds' AUC gain.
Prints one line per recipe: whole-case clean test Dice (mean +- sd over seeds) of the clean ROG
and of the recipe, the worst-case Dice per eps, and the AUC gain with its t-interval over seeds.
"""
import os
import sys
from dataclasses import replace
from pathlib import Path

from rog.demo import NUCLEI
from rog.pipeline.experiment import run_experiment

# each: the demo's settings with the fine-tuning's `DefenceSpec` changed ("free_lr1e-3" is the demo's own since issue 27)
RECIPES = {
    "free": {"lr": None},  # the demo's Free AT before issue 27: fine-tuning at the clean training's lr 1e-2
    "free_lr3e-3": {"lr": 3e-3},
    "free_lr1e-3": {"lr": 1e-3},
    "free_warm_mix": {"warmup": 0.3, "clean_weight": 0.5},
    "free_lr1e-3_warm_mix": {"lr": 1e-3, "warmup": 0.3, "clean_weight": 0.5},
    "trades": {"lr": 1e-3, "warmup": 0.3, "trades": 1.0},
    # PGD-AT (5 steps) for comparison: epochs are not divided by m, so 10 epochs of 10 batches, the
    # same 100 optimiser updates as Free AT's, each after 5 attack steps (about 6x the compute)
    "pgd_lr1e-3": {"lr": 1e-3, "adv": "pgd"},
    # the same 100 updates in 5 epochs of 4 iterations, so that the selection has 5 epochs to choose from
    "free_lr1e-3_robust": {"lr": 1e-3, "select": "robust", "iterations": 4, "epochs": 25},
}
SHARED = ["data", "fingerprint.json", "plan.json", "preprocessed", "atlas_transfer.json"]


def _linked_workdir(demo: Path, out: Path) -> None:
    """OUT with links to the demo's inputs and to every run and result but the Free AT ones."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "attacks").mkdir(exist_ok=True)
    for name in SHARED:
        if (demo / name).exists() and not (out / name).exists():
            os.symlink((demo / name).resolve(), out / name)
    for kind in ("runs", "attacks"):
        for d in (demo / kind).iterdir():
            if not d.name.startswith("rog_free") and not (out / kind / d.name).exists():
                os.symlink(d.resolve(), out / kind / d.name)


def main(demo: Path, root: Path, names: list[str]) -> None:
    for name in names:
        out = root / name
        _linked_workdir(demo, out)
        # the artefact sweep is no part of this table: one cheap corruption keeps the experiment's stage
        settings = replace(NUCLEI, corruptions=("noise",), severities=(1,), defence=replace(NUCLEI.defence, **RECIPES[name]))
        result = run_experiment(out / "data" / "Nuclei", out, settings, device="cpu")
        s = result.summary
        test = s.learning.models if s.learning else {}
        worst = s.seeds.groups["rog_free"].eps
        gain = s.seeds.gain
        print(f"{name}: whole-case clean test Dice rog_clean {test['rog_clean'].mean:.3f} +- {test['rog_clean'].sd:.3f}, "
              f"defended {test['rog_free'].mean:.3f} +- {test['rog_free'].sd:.3f}; worst-case Dice "
              + ", ".join(f"{e}/255 {v.mean:.3f} +- {v.sd:.3f}" for e, v in worst.items())
              + f"; AUC gain {gain.gain:.3f} [{gain.interval[0]:.3f}, {gain.interval[1]:.3f}]", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
