"""Worst-case artefact summaries: per artefact and severity, the mean over cases of the worst
case (search or draw), of the search alone, of the mean and the worst random draw, the share
of cases not broken (Dice >= tau), and the worst-case curve's area relative to clean Dice
(as `evaluate.corruption` computes it for random corruptions, so the two read side by side)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from rog.evaluate.robustness import auc
from rog.results import ArtefactRecord, ArtefactStats, ArtefactSummary, Score


def summarize_artefacts(records: list[ArtefactRecord], clean: dict[str, Score], tau: float) -> ArtefactSummary:
    clean_mean = float(np.mean([c.dice for c in clean.values()]))
    per = defaultdict(lambda: defaultdict(list))  # artefact -> severity -> records
    by_case = defaultdict(lambda: defaultdict(list))  # severity -> case -> worst-case Dice
    for r in records:
        per[r.artefact][r.severity].append(r)
        by_case[r.severity][r.case].append(r.dice)
    stats = {}
    for name, sev in per.items():
        levels = sorted(sev)
        mean = lambda field: {str(s): float(np.mean([getattr(r, field) for r in sev[s]])) for s in levels}  # noqa: E731
        worst = mean("dice")
        stats[name] = ArtefactStats(
            worst=worst, search=mean("search_dice"), random=mean("random_dice"), random_worst=mean("random_worst"),
            robust_accuracy={str(s): float(np.mean([r.dice >= tau for r in sev[s]])) for s in levels},
            relative_auc=auc([0, *levels], [clean_mean, *worst.values()]) / clean_mean if clean_mean > 0 else None)
    return ArtefactSummary(tau=tau, clean_dice=clean_mean, artefacts=stats,
                           worst_case={str(s): float(np.mean([min(v) for v in cases.values()]))
                                       for s, cases in sorted(by_case.items())})
