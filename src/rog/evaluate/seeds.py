"""Results across training seeds: mean and spread of each robustness figure per model, and
whether a defence's AUC gain stands out from that spread.

A model trained with several seeds is one group; each seed contributes its clean Dice, its
worst-case Dice at each eps, its AUC and its per-case worst-case Dice (the points). The sd is
the sample standard deviation over seeds (n - 1; 0 for one seed).
"""
from __future__ import annotations

import numpy as np


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


def auc_gain(groups: dict[str, dict], defended: str, reference: str) -> dict | None:
    """Whether `defended`'s mean AUC exceeds `reference`'s by more than twice the larger of
    their seed sds. Returns {"gain", "spread", "holds", "seeds", "text"} (the text states the
    finding in words, from the numbers), or None when either group is missing."""
    if defended not in groups or reference not in groups:
        return None
    a, b = groups[defended]["auc_worst_case"], groups[reference]["auc_worst_case"]
    gain, spread = a["mean"] - b["mean"], max(a["sd"], b["sd"])
    n = min(a["n"], b["n"])
    holds = n > 1 and gain > 2 * spread
    if n < 2:
        verdict = "one seed only, so the spread between seeds is unknown and the gain cannot be weighed against it"
    elif holds:
        verdict = (f"more than twice the larger sd between seeds ({spread:.3f}): the gain is larger than the "
                   "variation between training runs")
    else:
        verdict = (f"not more than twice the larger sd between seeds ({spread:.3f}): the gain does not stand out "
                   "from the variation between training runs")
    text = (f"{defended}'s AUC ({a['mean']:.3f} +- {a['sd']:.3f}) exceeds {reference}'s ({b['mean']:.3f} +- "
            f"{b['sd']:.3f}) by {gain:.3f} over {n} seed(s); that is {verdict}.")
    if gain <= 0:
        text = (f"{defended}'s AUC ({a['mean']:.3f} +- {a['sd']:.3f}) does not exceed {reference}'s "
                f"({b['mean']:.3f} +- {b['sd']:.3f}) over {n} seed(s): no gain.")
    return {"gain": gain, "spread": spread, "holds": bool(holds and gain > 0), "seeds": n, "text": text}
