"""Corruption summaries: Dice against severity (as ROOD-MRI reports it) and corruption error
relative to a baseline model (ImageNet-C's convention).

Severity 0 is the clean Dice. Per corruption: mean Dice at each severity, its mean over
severities 1-5, and the area under the Dice-severity curve over 0..5 divided by the clean
Dice (`relative_auc`: 1 = no degradation). Across corruptions: the mean corruption Dice, and
the per-case worst case over corruptions at each severity.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from rog.evaluate.robustness import auc
from rog.results import CorruptionRecord, CorruptionStats, CorruptionSummary, Score


def summarize_corruptions(records: list[CorruptionRecord], clean: dict[str, Score]) -> CorruptionSummary:
    clean_mean = float(np.mean([c.dice for c in clean.values()]))
    per = defaultdict(lambda: defaultdict(list))  # corruption -> severity -> dice
    by_case = defaultdict(lambda: defaultdict(list))  # severity -> case -> dice
    for r in records:
        per[r.corruption][r.severity].append(r.dice)
        by_case[r.severity][r.case].append(r.dice)
    stats = {}
    for name, sev in per.items():
        levels = sorted(sev)
        dice = [float(np.mean(sev[s])) for s in levels]
        stats[name] = CorruptionStats(
            severity={str(s): d for s, d in zip(levels, dice)}, mean_dice=float(np.mean(dice)),
            relative_auc=auc([0, *levels], [clean_mean, *dice]) / clean_mean if clean_mean > 0 else None)
    return CorruptionSummary(
        clean_dice=clean_mean, corruptions=stats,
        mean_corruption_dice=float(np.mean([c.mean_dice for c in stats.values()])),
        worst_case={str(s): float(np.mean([min(v) for v in cases.values()])) for s, cases in sorted(by_case.items())})


def corruption_errors(model: CorruptionSummary, baseline: CorruptionSummary) -> tuple[dict, float | None]:
    """ImageNet-C's corruption error of a model's summary relative to a baseline's: per
    corruption, the sum over severities of (1 - Dice) divided by the baseline's; mCE = their
    mean (1 = as robust as the baseline, lower is better). Corruptions both summaries hold.
    Returns ({corruption: CE}, mCE or None)."""
    ce = {}
    for name, c in model.corruptions.items():
        b = baseline.corruptions.get(name)
        if b is None or set(b.severity) != set(c.severity):
            continue
        err = sum(1 - d for d in c.severity.values())
        base = sum(1 - d for d in b.severity.values())
        ce[name] = err / base if base > 0 else None
    values = [v for v in ce.values() if v is not None]
    return ce, float(np.mean(values)) if values else None
