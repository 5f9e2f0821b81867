"""Random vs worst-case scanner artefacts for the demo's models, and artefact-adversarial
training beside L-inf Free AT (issue 26's tables).

    python benchmarks/artefact_robustness.py DEMO_WORKDIR OUT_ROOT [SEEDS]

DEMO_WORKDIR: a finished `rog demo` work directory; its runs (clean ROG, Free AT ROG, DynUNet,
seeds 0..SEEDS-1, default 3), their attack and corruption results are reused. OUT_ROOT/artefact_at
gets links to them and `run_experiment` runs only what is new there: ROG fine-tuned from each
clean seed with `--adv artefact` in Free AT's place (the demo's budget and lr 1e-3), its test
scores, its L-inf attack sweep and (seed 0) its random-corruption sweep. Then `rog artefact`
(`CONFIG`) on every model and seed into OUT_ROOT/artefacts/MODEL-sSEED. Prints two markdown
tables: per model and artefact, random draw vs worst case per severity (seed 0); per model, the
three kinds of robustness, mean +- sd over seeds.
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from defence_recipes import PLAIN, linked_workdir  # noqa: E402

from rog.bench.artefact import ArtefactConfig  # noqa: E402
from rog.demo import NUCLEI  # noqa: E402
from rog.pipeline.experiment import run_experiment  # noqa: E402
from rog.pipeline.sources import RunSource  # noqa: E402
from rog.pipeline.sweeps import SweepRequest, run_sweep  # noqa: E402
from rog.rundir import ResultsDir, RunDir  # noqa: E402

# one restart (from the worst of 10 draws) of 10 iterations: 12 sweeps fit an hour of 2 CPU cores;
# the demo's seed-0 models were also run with `rog artefact`'s default 2 restarts (docs/benchmarks.md)
CONFIG = ArtefactConfig(severities=[1, 3, 5], draws=10, iters=10, restarts=1)


def _sd(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def main(demo: Path, root: Path, seeds: int) -> None:
    out = root / "artefact_at"
    linked_workdir(demo, out, own=False)
    run_experiment(out / "data" / "Nuclei", out, replace(NUCLEI, seeds=seeds, defence=replace(PLAIN["nuclei"], lr=1e-3, adv="artefact")),
                   device="cpu")
    models = {"rog_clean": (demo, "rog_clean"), "rog_free": (demo, "rog_free"), "dynunet": (demo, "dynunet"),
              "rog_artefact": (out, "rog_free")}
    art = {}
    for label, (wd, run) in models.items():
        for seed in range(seeds):
            folder = ResultsDir(root / "artefacts" / f"{label}-s{seed}")
            if not folder.finished():
                run_sweep(SweepRequest(RunSource(run=wd / "runs" / f"{run}-s{seed}"), CONFIG, label=label,
                                       out=folder.path, progress=False))
            art[label, seed] = folder.read()
    print("| model | artefact | " + " | ".join(f"severity {s}: random / worst of 10 / worst case"
                                                for s in CONFIG.severities) + " |")
    print("|---|---|" + "---|" * len(CONFIG.severities))
    for label in models:
        s = art[label, 0].summary
        for a, v in s.artefacts.items():
            print(f"| {label} | {a} | " + " | ".join(f"{v.random[k]:.3f} / {v.random_worst[k]:.3f} / **{v.worst[k]:.3f}**"
                                                      for k in v.levels()) + " |")
    print()
    print("| model | clean test Dice | L-inf worst case 8/255 | L-inf AUC | random corruptions (seed 0) "
          "| artefacts: random draw | worst of 10 draws | worst case |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (wd, run) in models.items():
        test, at8, auc, rand, worst10, worst = [], [], [], [], [], []
        for seed in range(seeds):
            t = RunDir(wd / "runs" / f"{run}-s{seed}").read_test_eval()
            test.append(t["mean_foreground_dice"])
            attack = ResultsDir(wd / "attacks" / f"{run}-s{seed}-patch").read().summary
            at8.append(attack.eps["8.0"].worst_case_dice)
            auc.append(attack.auc_worst_case)
            s = art[label, seed].summary
            for field, into in (("random", rand), ("random_worst", worst10), ("worst", worst)):
                into.append(np.mean([d for v in s.artefacts.values() for d in getattr(v, field).values()]))
        corr = ResultsDir(wd / "attacks" / f"{run}-s0-corruptions").read().summary.mean_corruption_dice
        print(f"| {label} | {_sd(test)} | {_sd(at8)} | {_sd(auc)} | {corr:.3f} | {_sd(rand)} | {_sd(worst10)} "
              f"| {_sd(worst)} |", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 3)
