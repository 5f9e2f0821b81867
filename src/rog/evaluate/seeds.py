"""Results across training seeds: mean and spread of each robustness figure per model, and a
defence's AUC gain with a paired bootstrap interval over seeds and cases.

A model trained with several seeds is one group; each seed contributes its clean Dice, its
worst-case Dice at each eps, its AUC and its per-case worst-case Dice (the points). The sd is
the sample standard deviation over seeds (n - 1; 0 for one seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rog.evaluate.robustness import auc


@dataclass
class Stat:
    """Mean and sample sd (n - 1; 0 for one value) of `values`."""

    mean: float
    sd: float
    n: int
    values: list

    def text(self) -> str:
        """'mean +- sd' (the mean alone for one value)."""
        return f"{self.mean:.3f}" + (f" +- {self.sd:.3f}" if self.n > 1 else "")


def mean_sd(values) -> Stat:
    v = np.asarray(list(values), float)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size), v.tolist())


@dataclass
class SeedRun:
    """One training seed's figures: clean Dice, AUC, worst-case mean Dice per eps key, and
    per-case worst-case Dice {case: {eps key: Dice}} (eps "0.0" = clean)."""

    clean_dice: float
    auc_worst_case: float | None
    eps: dict
    cases: dict


@dataclass
class SeedGroup:
    """One model over its seeds: a `Stat` of each figure over the eps every seed has, and the
    per-case points {eps key: [[seed, case, Dice], ...]}."""

    seeds: list
    clean_dice: Stat
    auc_worst_case: Stat
    eps: dict  # eps key -> Stat
    points: dict


def across_seeds(per_seed: dict[int, SeedRun]) -> SeedGroup:
    """Aggregate one model's seeds (seed -> its `SeedRun`)."""
    seeds = sorted(per_seed)
    runs = [per_seed[s] for s in seeds]
    eps_keys = sorted(set.intersection(*(set(r.eps) for r in runs)), key=float)
    points: dict[str, list] = {}
    for seed, r in zip(seeds, runs):
        for case, by_eps in sorted(r.cases.items()):
            for e, d in by_eps.items():
                points.setdefault(e, []).append([seed, case, d])
    return SeedGroup(seeds, mean_sd(r.clean_dice for r in runs), mean_sd(r.auc_worst_case for r in runs),
                     {e: mean_sd(r.eps[e] for r in runs) for e in eps_keys},
                     dict(sorted(points.items(), key=lambda kv: float(kv[0]))))


def case_aucs(group: SeedGroup) -> dict[tuple[int, str], float]:
    """AUC of each (seed, case)'s worst-case Dice-vs-eps curve (eps 0 = its clean Dice), from
    a group's points. Their mean is the group's AUC: the AUC is linear in the curve."""
    curves: dict[tuple[int, str], list] = {}
    for e, points in group.points.items():
        for seed, case, dice in points:
            curves.setdefault((seed, case), []).append((float(e), dice))
    return {k: auc(*zip(*sorted(v))) for k, v in curves.items()}


@dataclass
class Gain:
    """A defence's AUC gain over a reference with its paired bootstrap interval, in words."""

    gain: float
    interval: list
    level: float
    holds: bool
    seeds: int
    cases: int
    resamples: int
    text: str


def auc_gain(groups: dict[str, SeedGroup], defended: str, reference: str, resamples: int = 10000,
             level: float = 0.95, seed: int = 0) -> Gain | None:
    """`defended`'s AUC gain over `reference` with a paired bootstrap interval. Both models are
    scored on the same cases and their seeds pair (a defence is fine-tuned from the reference
    of its seed), so each (seed, case) gives one difference of AUCs; the bootstrap resamples
    seeds and, within them, cases (both with replacement), the variation between training runs
    and between cases. The gain "holds" when the `level` percentile interval excludes 0.
    Returns None when either group is missing or they share no (seed, case)."""
    if defended not in groups or reference not in groups:
        return None
    a, b = case_aucs(groups[defended]), case_aucs(groups[reference])
    seeds = sorted({s for s, _ in a} & {s for s, _ in b})
    cases = sorted({c for _, c in a} & {c for _, c in b})
    if not all((s, c) in a and (s, c) in b for s in seeds for c in cases) or not seeds or not cases:
        return None
    diff = np.array([[a[s, c] - b[s, c] for c in cases] for s in seeds])  # [seeds, cases]
    gain = float(diff.mean())
    rng = np.random.default_rng(seed)
    si = rng.integers(0, len(seeds), (resamples, len(seeds)))
    ci = rng.integers(0, len(cases), (resamples, len(cases)))
    boot = diff[si[:, :, None], ci[:, None, :]].mean((1, 2))
    tail = (1 - level) / 2 * 100
    lo, hi = (float(v) for v in np.percentile(boot, [tail, 100 - tail]))
    holds = lo > 0
    ga, gb = groups[defended].auc_worst_case, groups[reference].auc_worst_case
    n = f"{len(seeds)} seed(s) x {len(cases)} case(s)"
    varies = ("training runs and cases" if len(seeds) > 1 and len(cases) > 1 else
              "cases (one training seed: the spread between training runs is not in it)" if len(cases) > 1 else
              "training runs (one case: the spread between cases is not in it)")
    if len(seeds) * len(cases) < 2:
        verdict = "one seed and one case only: no interval can be drawn, and the gain cannot be weighed"
        holds, lo, hi = False, float("nan"), float("nan")
    elif holds:
        verdict = (f"the {level:.0%} interval [{lo:+.3f}, {hi:+.3f}] (paired bootstrap over {n}) excludes 0: "
                   f"the gain holds beyond the variation between {varies}")
    else:
        verdict = (f"the {level:.0%} interval [{lo:+.3f}, {hi:+.3f}] (paired bootstrap over {n}) includes 0: "
                   f"the gain does not stand out from the variation between {varies}")
    small = (" With so few seeds and cases the bootstrap interval is too narrow rather than too wide; read "
             "it as the least uncertainty there is." if 1 < len(seeds) * len(cases) < 20 else "")

    def pm(stat: Stat) -> str:
        return f"{stat.mean:.3f}" + (f" +- {stat.sd:.3f} over {stat.n} seeds" if stat.n > 1 else "")
    text = (f"{defended}'s AUC ({pm(ga)}) {'exceeds' if gain > 0 else 'does not exceed'} {reference}'s "
            f"({pm(gb)}): gain {gain:+.3f}; {verdict}.{small}")
    return Gain(gain, [lo, hi], level, bool(holds), len(seeds), len(cases), resamples, text)
