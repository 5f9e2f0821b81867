"""Results across training seeds: mean and spread of each robustness figure per model, and a
defence's AUC gain with a t-interval over training seeds, the unit of replication.

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
    """A defence's AUC gain over a reference, with a t-interval over training seeds (the unit
    of replication), the exact sign-flip p-value over them, and the verdict in words."""

    gain: float
    interval: list
    level: float
    holds: bool
    seeds: int
    cases: int
    sign_p: float | None
    text: str


def sign_flip_p(values, exact_up_to: int = 16) -> float:
    """One-sided p-value that the mean of `values` is > 0 by chance: the share of the 2^n sign
    flips whose mean is at least the observed one (1/8 at best for three values); exact up to
    `exact_up_to` values, beyond that over 2^16 seeded random flips (2^n would not fit)."""
    v = np.asarray(list(values), float)
    if v.size <= exact_up_to:
        signs = np.array(np.meshgrid(*[[1.0, -1.0]] * v.size)).reshape(v.size, -1).T
    else:
        signs = np.random.default_rng(0).choice([1.0, -1.0], (2 ** 16, v.size))
    return float(np.mean((signs * np.abs(v)).mean(1) >= v.mean() - 1e-12))


def auc_gain(groups: dict[str, SeedGroup], defended: str, reference: str, level: float = 0.95) -> Gain | None:
    """`defended`'s AUC gain over `reference`. Both models are scored on the same cases and
    their seeds pair (a defence is fine-tuned from the reference of its seed): each seed gives
    one gain, the mean over the cases of the paired AUC differences. The unit of replication
    is the training seed: the interval is the `level` t-interval over the seeds' gains (n - 1
    degrees of freedom; exact coverage where they are normal), for these test cases. The cases
    are not replicates: a benchmark's few test cases (the demo's are the two hemispheres of one
    template) are not a sample of subjects, and their spread is not resampled. The gain "holds"
    when the interval excludes 0; with one seed there is no interval. Returns None when either
    group is missing or they share no (seed, case)."""
    if defended not in groups or reference not in groups:
        return None
    a, b = case_aucs(groups[defended]), case_aucs(groups[reference])
    seeds = sorted({s for s, _ in a} & {s for s, _ in b})
    cases = sorted({c for _, c in a} & {c for _, c in b})
    if not all((s, c) in a and (s, c) in b for s in seeds for c in cases) or not seeds or not cases:
        return None
    per_seed = np.array([[a[s, c] - b[s, c] for c in cases] for s in seeds]).mean(1)
    gain, n = float(per_seed.mean()), len(seeds)
    on = f"on these {len(cases)} test case(s)"
    if n < 2:
        positive = sum(a[seeds[0], c] > b[seeds[0], c] for c in cases)
        lo = hi = sign = float("nan")
        holds = False
        verdict = (f"one training seed: no interval, the variation between training runs is unmeasured "
                   f"(the gain is positive on {positive} of the {len(cases)} test case(s), which are not replicates)")
    else:
        from scipy import stats
        half = float(stats.t.ppf(1 - (1 - level) / 2, n - 1) * per_seed.std(ddof=1) / np.sqrt(n))
        lo, hi, sign = gain - half, gain + half, sign_flip_p(per_seed)
        holds = lo > 0
        verdict = (f"the {level:.0%} t-interval over the {n} training seeds [{lo:+.3f}, {hi:+.3f}] "
                   + (f"excludes 0: the gain holds beyond the variation between training runs, {on}"
                      if holds else f"includes 0: the gain does not stand out from the variation between "
                                    f"training runs, {on}")
                   + f" (exact sign-flip p = {sign:.3g} over the seeds)")
    ga, gb = groups[defended].auc_worst_case, groups[reference].auc_worst_case

    def pm(stat: Stat) -> str:
        return f"{stat.mean:.3f}" + (f" +- {stat.sd:.3f} over {stat.n} seeds" if stat.n > 1 else "")
    text = (f"{defended}'s AUC ({pm(ga)}) {'exceeds' if gain > 0 else 'does not exceed'} {reference}'s "
            f"({pm(gb)}): gain {gain:+.3f}; {verdict}. Other subjects are not covered: the cases are "
            "not a sample of them.")
    return Gain(gain, [lo, hi], level, bool(holds), n, len(cases), None if n < 2 else sign, text)
