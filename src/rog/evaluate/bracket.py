"""Robustness bracketed: per model, noise level and L2 radius, randomized smoothing's
certified Dice (a lower bound, `rog certify`) beside the Dice that rog's attacks reach under
the same L2 threat (an upper bound, `rog attack --scope volume --norm l2`), for the report.

The two sides are matched case by case: a certify record stores, per radius r, the `rog
attack --norm l2 --eps` value whose ball is r on that case (`l2_eps`, which depends on the
case's size), and an attack record counts at r only where its eps is that value. Pure numpy:
the report imports no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rog.results import Results

# relative tolerance of an attack's eps against a radius's l2_eps: the printed eps carries
# 6 significant digits, and a different radius is always further away than this
EPS_MATCH = 1e-3


@dataclass
class BracketPoint:
    """One radius: `radius` (L2 norm of the perturbation on the range-normalised scale),
    `l2_eps` (the same as `rog attack --norm l2 --eps`: per voxel and channel, on the /255
    scale; mean over cases), `rms` (the per-voxel root mean square of such a perturbation in
    the model input's intensity units, per channel, mean over cases; None for older records),
    `certified` (the mean certified Dice lower bound), `certified_share` (voxels certified),
    `attacked` (the mean over cases of the worst Dice of the base model under the attacks of
    that L2 ball; None unless every case was attacked there; at r = 0 the clean Dice) and
    `attacks` (the attack ids that ran there)."""

    radius: float
    l2_eps: float
    rms: list | None
    certified: float
    certified_share: float
    attacked: float | None
    attacks: list


@dataclass
class Bracket:
    """One model at one noise level `sigma`: the base model's clean Dice, the smoothed
    labels' Dice (no abstention), `linf_l2` (the mean L2 norm, same scale, of the attacks'
    L-inf ball of 8/255 on these cases, to set the radii against) and a `BracketPoint` per
    radius."""

    sigma: float
    cases: int
    clean_dice: float
    smoothed_dice: float
    alpha: float
    linf_l2: float | None
    points: list


def l2_attacks(certified: Results, attacks: list[Results]) -> list[Results]:
    """The attack results among `attacks` that bracket `certified`: whole cases (scope
    "volume"), the L2 norm, the same model (weights, else the label) and cases."""
    mine = certified.provenance
    return [a for a in attacks
            if (a.threat or {}).get("norm") == "l2" and a.config.get("scope") == "volume"
            and set(certified.clean) <= set(a.clean)
            and (a.provenance.weights == mine.weights if a.provenance.weights and mine.weights
                 else a.meta.label == certified.meta.label)]


def brackets(certified: Results, attacks: list[Results]) -> list[Bracket]:
    """One `Bracket` per noise level of the finished certify `certified`, its attacked side
    from the matching `l2_attacks` among `attacks` (attack results of any kind of model)."""
    by_case: dict[str, list] = {}  # the valid L2 attack records of each case, read once
    for a in l2_attacks(certified, attacks):
        for x in a.measured():
            if x.valid():
                by_case.setdefault(x.case, []).append(x)
    out = []
    for sigma in sorted({r.sigma for r in certified.records}):
        mine = [r for r in certified.records if r.sigma == sigma]
        points = []
        for i, radius in enumerate(mine[0].radii):
            worst, ids = [], set()
            for rec in mine:
                hits = [x for x in by_case.get(rec.case, []) if math.isclose(x.eps, rec.l2_eps[i], rel_tol=EPS_MATCH)]
                ids.update(x.attack_id for x in hits)
                if radius == 0:
                    worst.append(certified.clean[rec.case].dice)
                elif hits:
                    worst.append(min(x.dice for x in hits))
            ranges = [rec.input_range for rec in mine]
            rms = (np.mean([np.asarray(rg) * rec.l2_eps[i] / 255 for rg, rec in zip(ranges, mine)], axis=0).tolist()
                   if all(rg is not None for rg in ranges) else None)
            points.append(BracketPoint(
                radius, float(np.mean([rec.l2_eps[i] for rec in mine])), rms,
                float(np.mean([rec.certified_dice[i] for rec in mine])),
                float(np.mean([rec.certified_share[i] for rec in mine])),
                float(np.mean(worst)) if len(worst) == len(mine) else None, sorted(ids)))
        sizes = [rec.elements for rec in mine]
        out.append(Bracket(sigma, len(mine), float(np.mean([certified.clean[r.case].dice for r in mine])),
                           float(np.mean([r.smoothed_dice for r in mine])), float(certified.config["alpha"]),
                           float(np.mean([8 / 255 * math.sqrt(n) for n in sizes])) if None not in sizes else None,
                           points))
    return out
