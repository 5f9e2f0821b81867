"""Results across training seeds: mean and spread of each robustness figure per model, and a
defence's AUC gain with a paired bootstrap interval over seeds and cases.

A model trained with several seeds is one group; each seed contributes its clean Dice, its
worst-case Dice at each eps, its AUC and its per-case worst-case Dice (the points). The sd is
the sample standard deviation over seeds (n - 1; 0 for one seed).
"""
from __future__ import annotations

import numpy as np

from rog.evaluate.robustness import auc


def mean_sd(values) -> dict:
    """{"mean", "sd", "n", "values"} of a list of numbers (sd with n - 1; 0 for one value)."""
    v = np.asarray(list(values), float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size),
            "values": v.tolist()}


def across_seeds(per_seed: dict[int, dict]) -> dict:
    """Aggregate one model's seeds. `per_seed`: seed -> {"clean_dice": float,
    "auc_worst_case": float, "eps": {eps_key: float (worst-case mean Dice)},
    "cases": {case: {eps_key: float}} (per-case worst-case Dice, eps "0.0" = clean)}.
    Returns {"seeds", "clean_dice", "auc_worst_case", "eps": {eps_key: mean_sd}, "points":
    {eps_key: [[seed, case, dice], ...]}} over the eps every seed has."""
    seeds = sorted(per_seed)
    runs = [per_seed[s] for s in seeds]
    eps_keys = sorted(set.intersection(*(set(r["eps"]) for r in runs)), key=float)
    points: dict[str, list] = {}
    for seed, r in zip(seeds, runs):
        for case, by_eps in sorted(r["cases"].items()):
            for e, d in by_eps.items():
                points.setdefault(e, []).append([seed, case, d])
    return {"seeds": seeds, "clean_dice": mean_sd(r["clean_dice"] for r in runs),
            "auc_worst_case": mean_sd(r["auc_worst_case"] for r in runs),
            "eps": {e: mean_sd(r["eps"][e] for r in runs) for e in eps_keys},
            "points": dict(sorted(points.items(), key=lambda kv: float(kv[0])))}


def case_aucs(group: dict) -> dict[tuple[int, str], float]:
    """AUC of each (seed, case)'s worst-case Dice-vs-eps curve (eps 0 = its clean Dice), from
    an `across_seeds` group's points. Their mean is the group's AUC: the AUC is linear in the
    curve."""
    curves: dict[tuple[int, str], list] = {}
    for e, points in group["points"].items():
        for seed, case, dice in points:
            curves.setdefault((seed, case), []).append((float(e), dice))
    return {k: auc(*zip(*sorted(v))) for k, v in curves.items()}


def auc_gain(groups: dict[str, dict], defended: str, reference: str, resamples: int = 10000,
             level: float = 0.95, seed: int = 0) -> dict | None:
    """`defended`'s AUC gain over `reference` with a paired bootstrap interval. Both models are
    scored on the same cases and their seeds pair (a defence is fine-tuned from the reference
    of its seed), so each (seed, case) gives one difference of AUCs; the bootstrap resamples
    seeds and, within them, cases (both with replacement), the variation between training runs
    and between cases. The gain "holds" when the `level` percentile interval excludes 0.
    Returns {"gain", "interval", "level", "holds", "seeds", "cases", "resamples", "text"}, or
    None when either group is missing or they share no (seed, case)."""
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
    ga, gb = groups[defended]["auc_worst_case"], groups[reference]["auc_worst_case"]
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

    def pm(stat):
        return f"{stat['mean']:.3f}" + (f" +- {stat['sd']:.3f} over {stat['n']} seeds" if stat["n"] > 1 else "")
    text = (f"{defended}'s AUC ({pm(ga)}) {'exceeds' if gain > 0 else 'does not exceed'} {reference}'s "
            f"({pm(gb)}): gain {gain:+.3f}; {verdict}.{small}")
    return {"gain": gain, "interval": [lo, hi], "level": level, "holds": bool(holds), "seeds": len(seeds),
            "cases": len(cases), "resamples": resamples, "text": text}
