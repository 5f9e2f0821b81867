"""Missing- or degraded-modality summaries: per channel and replacement, the mean Dice over
cases (and per class) and the share of cases that keep Dice at or above tau; per replacement,
the per-case worst channel (`rog.bench.modality`)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from rog.results import ModalityRecord, ModalitySummary, Score


def summarize_modalities(records: list[ModalityRecord], clean: dict[str, Score], tau: float) -> ModalitySummary:
    """The `ModalitySummary` of `records` (every case x channel x replacement) over the
    cases' `clean` scores, robust accuracy at `tau`."""
    per = defaultdict(lambda: defaultdict(list))  # channel key -> replacement -> records
    worst = defaultdict(dict)  # replacement -> case -> lowest Dice over channels
    for r in records:
        per[str(r.channel)][r.replacement].append(r)
        worst[r.replacement][r.case] = min(worst[r.replacement].get(r.case, 2.0), r.dice)
    dice, per_class, robust = {}, {}, {}
    for ch in sorted(per, key=int):
        dice[ch] = {k: float(np.mean([r.dice for r in v])) for k, v in per[ch].items()}
        per_class[ch] = {k: np.mean([r.dice_per_class for r in v], axis=0).tolist() for k, v in per[ch].items()}
        robust[ch] = {k: float(np.mean([r.dice >= tau for r in v])) for k, v in per[ch].items()}
    return ModalitySummary(clean_dice=float(np.mean([c.dice for c in clean.values()])), dice=dice,
                           dice_per_class=per_class, robust_accuracy=robust,
                           worst={k: float(np.mean(list(v.values()))) for k, v in worst.items()})
