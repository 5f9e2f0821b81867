"""Which epoch's weights become `checkpoint_best.pt`.

"patch" (the default, the paper's): the highest clean Dice of the foreground-centred
validation patches. "robust", for adversarial runs: the highest mean of the clean Dice and the
Dice under a cheap attack (APGD-CE, a few iterations at the training eps, in the benchmark's
threat model) of the whole validation volumes through the sliding window, so the kept weights
are neither a model that only segments nor one that only resists.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from rog.attacks import APGD, ThreatModel
from rog.attacks.base import frozen
from rog.bench.cases import load_bench_cases
from rog.infer.sliding_window import SlidingWindow
from rog.plan import Plan

RULES = ("patch", "robust")


class RobustSelection:
    """Scores weights on the whole validation volumes `names` of the preprocessed `data_dir`."""

    def __init__(self, data_dir: str | Path, names: list[str], plan: Plan, eps: float, iters: int, device):
        self.cases = load_bench_cases(data_dir, names, "volume", plan.val_patch_size, device)
        self.plan, self.eps, self.iters = plan, eps, iters

    def rule(self) -> str:
        """The rule in words, for the run's log."""
        return (f"best checkpoint: the highest mean of clean Dice and Dice under APGD-CE ({self.iters} iterations, "
                f"eps {self.eps:g}/255) on {len(self.cases)} whole validation volume(s)")

    def __call__(self, model: nn.Module) -> tuple[float, float]:
        """(clean Dice, attacked Dice), means over the validation volumes, of `model`."""
        whole = SlidingWindow(model, self.plan.val_patch_size, overlap=0.5)
        attack = APGD(whole, ThreatModel.exactly(self.eps), iters=self.iters, loss="ce",
                      num_classes=self.plan.num_classes, seed=0)
        clean, attacked = [], []
        with frozen(model):
            for case in self.cases:
                attack(case.x, case.y, case.lo, case.hi)
                clean += list(attack.info["clean_dice"])
                attacked += list(attack.info["dice"])
        return float(np.mean(clean)), float(np.mean(attacked))
