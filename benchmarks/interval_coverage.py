"""Coverage of the AUC gain's interval by simulation, at the demo's sizes (issue 40).

    python benchmarks/interval_coverage.py [RUNS]

Simulates paired experiments: per (seed, case) a reference AUC (0.4 + N(0, 0.1)) and a
defended AUC that adds a gain made of a training-run part (sd `SD`, new for each seed), a case
part (sd `SD`, one per case) and noise (sd 0.02), under two kinds of variation: "by seed" (the
gain varies between training runs only) and "by case" (between the cases only). For each size
(seeds x cases) it prints, for `rog.evaluate.seeds.auc_gain` (a t-interval over seeds) and for
the paired bootstrap over seeds and cases it replaced: the share of experiments whose 95 %
interval covers the gain on these cases (what rog states), the share covering the mean gain
over all cases (which neither states: the test cases are not a sample of subjects), and the
share saying "holds" when the gain on these cases is 0 (by seed: no true gain; nominal 2.5 %).
"""
import sys

import numpy as np

from rog.evaluate.seeds import SeedRun, across_seeds, auc_gain

SD = 0.05
SIZES = ((3, 2), (1, 2), (5, 6))


def groups(defended: np.ndarray, reference: np.ndarray) -> dict:
    """Two `SeedGroup`s whose per-(seed, case) AUC is exactly the given `[seeds, cases]`
    arrays (eps 0 and 8 at Dice 2 AUC - 1: the AUC over 0-8 is the mean of the two)."""
    def group(aucs):
        runs = {}
        for s, row in enumerate(aucs):
            cases = {f"c{c}": {"0.0": 1.0, "8.0": 2 * a - 1} for c, a in enumerate(row)}
            runs[s] = SeedRun(1.0, float(row.mean()), {"8.0": float(2 * row.mean() - 1)}, cases)
        return across_seeds(runs)
    return {"free": group(defended), "clean": group(reference)}


def bootstrap(diff: np.ndarray, rng, resamples: int = 2000) -> tuple[float, float]:
    """The paired bootstrap's 95 % percentile interval (seeds, then cases, with replacement)."""
    si = rng.integers(0, diff.shape[0], (resamples, diff.shape[0]))
    ci = rng.integers(0, diff.shape[1], (resamples, diff.shape[1]))
    boot = diff[si[:, :, None], ci[:, None, :]].mean((1, 2))
    return tuple(float(v) for v in np.percentile(boot, [2.5, 97.5]))


def simulate(seeds: int, cases: int, varies: str, runs: int, rng) -> dict:
    """Shares (covers these cases' gain, covers the mean gain, false "holds") per method."""
    out = {m: np.zeros(3) for m in ("t-interval", "bootstrap")}
    for _ in range(runs):
        case_gain = rng.normal(0, SD, cases) if varies == "case" else np.zeros(cases)
        seed_gain = rng.normal(0, SD, seeds) if varies == "seed" else np.zeros(seeds)
        ref = 0.4 + rng.normal(0, 0.1, (seeds, cases))
        diff = case_gain[None, :] + seed_gain[:, None] + rng.normal(0, 0.02, (seeds, cases))
        truth = float(case_gain.mean())
        g = auc_gain(groups(ref + diff, ref), "free", "clean")
        for m, (lo, hi) in (("t-interval", g.interval), ("bootstrap", bootstrap(diff, rng))):
            out[m] += [lo <= truth <= hi, lo <= 0 <= hi, lo > 0 and varies == "seed"]
    return {m: v / runs for m, v in out.items()}


def main(runs: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{runs} simulated experiments per row; gain sd {SD} by seed or by case, noise sd 0.02")
    print("| seeds x cases | gain varies by | method | covers these cases' gain | covers the mean gain | "
          "false 'holds' |")
    print("|---|---|---|---|---|---|")
    for seeds, cases in SIZES:
        for varies in ("seed", "case"):
            for m, (these, mean, false) in simulate(seeds, cases, varies, runs, rng).items():
                if seeds == 1 and m == "t-interval":
                    row = "no interval | no interval | 0 % (never holds)"
                else:
                    row = f"{these:.1%} | {mean:.1%} | " + (f"{false:.1%}" if varies == "seed" else "-")
                print(f"| {seeds} x {cases} | {varies} | {m} | {row} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
