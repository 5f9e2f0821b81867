"""Robustness summaries: success threshold, per-instance worst case, AUC of Dice vs eps."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from rog.results import AttackRecord, AttackSummary, EpsSummary, Score


def success_threshold(clean_dice) -> float:
    """tau = mu / 2, mu = mean clean Dice over the evaluated cases (the paper's definition)."""
    return float(np.mean(list(clean_dice))) / 2.0


def auc(eps, dice) -> float:
    """Area under the Dice-vs-eps curve, normalised by the eps range (1 = no drop from 1)."""
    eps, dice = np.asarray(eps, float), np.asarray(dice, float)
    order = np.argsort(eps)
    eps, dice = eps[order], dice[order]
    if len(eps) < 2 or eps[-1] == eps[0]:
        return float(dice.mean())
    area = float(np.sum((dice[1:] + dice[:-1]) / 2 * np.diff(eps)))  # trapezoid rule
    return area / float(eps[-1] - eps[0])


def summarize(records: list[AttackRecord], clean: dict[str, Score], tau: float) -> AttackSummary:
    """Per eps: clean and worst-case mean Dice, robust accuracy, per-attack means, per-class
    worst-case Dice. A case is broken at an eps when any attack drove its Dice below tau. Only
    valid points count (inside the ball and the box, finite: `AttackRecord.valid`): an invalid
    one is the validity check's failure, not a success, and where no attack returned a valid
    point the case keeps its clean Dice. Each case's worst attack is named (`found_by`); where
    the records count lesions, the lesions missed and invented at the worst cases and the
    share of cases where no attack missed a lesion the clean prediction found."""
    by_eps: dict[float, dict[str, list[AttackRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if not r.skipped:
            by_eps[r.eps][r.case].append(r)
    clean_mean = float(np.mean([c.dice for c in clean.values()])) if clean else float("nan")
    k = len(next(iter(clean.values())).dice_per_class) if clean else 0
    summary = AttackSummary(tau, clean_mean, {}, None)
    eps_values = sorted(by_eps)
    for eps in eps_values:
        worst, classes, attacks, found_by, lesions = [], [], defaultdict(list), {}, []
        for case, recs in by_eps[eps].items():
            valid = [r for r in recs if r.valid()]
            w = min(valid, key=lambda r: r.dice) if valid else clean[case]
            found_by[case] = w.attack_id if valid and w.dice < clean[case].dice else "clean"
            if valid and all(r.lesions for r in valid):
                lesions.append((sum(w.lesions["missed"]), sum(w.lesions["invented"]),
                                not any(sum(r.lesions["missed"]) > sum(r.lesions["clean_missed"]) for r in valid)))
            worst.append(w.dice)
            classes.append(w.dice_per_class)
            for r in valid:
                attacks[r.attack_id].append(r.dice)
        summary.eps[str(eps)] = EpsSummary(
            worst_case_dice=float(np.mean(worst)), robust_accuracy=float(np.mean([d >= tau for d in worst])),
            worst_case_dice_per_class=np.nanmean(np.array(classes, float), axis=0).tolist() if classes else [None] * k,
            attacks={a: float(np.mean(v)) for a, v in attacks.items()}, cases=len(worst), found_by=found_by,
            **(dict(lesions_missed=int(sum(m for m, _, _ in lesions)), lesions_invented=int(sum(i for _, i, _ in lesions)),
                    lesion_robust_accuracy=float(np.mean([kept for _, _, kept in lesions])))
               if lesions and len(lesions) == len(worst) else {}))
    curve_eps = [0.0] + [e for e in eps_values if e > 0]
    curve = [clean_mean] + [summary.eps[str(e)].worst_case_dice for e in eps_values if e > 0]
    summary.auc_worst_case = auc(curve_eps, curve) if len(curve_eps) > 1 else None
    return summary
