"""An in-memory AutoAttack ensemble for segmentation, as AutoAttack users know it:

    x_adv = Ensemble(model, eps=8, attacks="standard")(x, y)

Every attack runs from the clean input (the worst case needs each attack's own result, not a
chain), and each instance keeps the valid output (inside the ball and the box, finite) of the
attack that drove its Dice lowest. `ensemble.info` holds, per instance, the clean Dice, each
attack's Dice and which attack won, tau and the robust accuracy; `ensemble.checks` the
validity checks `rog attack` runs that need no extra attack (AutoAttack's own
`run_standard_evaluation` checks are among them: a randomised model, probabilities instead of
logits, zero gradients, a black-box attack stronger than the white-box ones).
"""
from __future__ import annotations

import torch
from torch import nn

from rog.attacks.base import frozen, label_map
from rog.attacks.registry import QUERY_BASED, expand, make_attack
from rog.attacks.threat import ThreatModel
from rog.bench import checks
from rog.bench.records import measure
from rog.evaluate.metrics import dice_batch
from rog.evaluate.robustness import success_threshold


class Ensemble:
    """AutoAttack's ensemble for segmentation, in memory.

    Args:
        model: any module mapping `[B, C, D, H, W]` to logits `[B, K, D, H, W]`.
        eps: on the /255 scale of each channel's range.
        attacks: names, or "standard" (APGD-CE, APGD-DLR, FAB-T, Square) / "sea" / "plus"
            (`rog.attacks.registry.ENSEMBLES`).
        iters: per gradient attack.
        queries: for Square.
        threshold: the success threshold tau given to FAB-T (default: the benchmark's, half
            the mean clean Dice of the instances given, `success_threshold`).

    Calling it on x `[B, C, D, H, W]`, y `[B, D, H, W]` (or `[B, 1, ...]`) returns the
    per-instance worst case like x; `info` holds "clean_dice", "tau", each attack's "dice",
    "worst_case_dice", "worst_attack", "robust_accuracy" (the share of instances whose worst
    case stays at or above tau) and "records" (`rog.results.AttackRecord` per instance and
    attack, instances named by index); `checks` the validity checks (`rog.results.Check`)."""

    def __init__(self, model: nn.Module, eps: float = 8.0, attacks: str | list[str] = "standard", iters: int = 5,
                 queries: int = 500, norm: str = "linf", threshold: float | None = None,
                 num_classes: int | None = None, seed: int = 0):
        self.model, self.threat = model, ThreatModel(eps, norm)
        self.attacks = expand([attacks] if isinstance(attacks, str) else list(attacks))
        self.iters, self.queries, self.threshold = iters, queries, threshold
        self.num_classes, self.seed = num_classes, seed
        self.info: dict = {}
        self.checks: list = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lo: torch.Tensor | None = None,
                 hi: torch.Tensor | None = None) -> torch.Tensor:
        """x `[B, C, ...]`, y `[B, ...]` (or `[B, 1, ...]`), optional box lo/hi `[B, C, 1, ...]`
        (default: each instance's channel range) -> x_adv like x, the per-instance worst case."""
        y = label_map(y, x)
        if lo is None or hi is None:
            lo, hi = ThreatModel.channel_range(x)
        with frozen(self.model), torch.no_grad():
            logits = self.model(x)
        k = self.num_classes or logits.shape[1]
        best_x = x.detach().clone()
        best = dice_batch(logits.argmax(1), y, k)
        tau = self.threshold if self.threshold is not None else success_threshold(best.tolist())
        self.info = {"clean_dice": best.tolist(), "tau": tau, "dice": {}, "skipped": {}}
        winner, records = ["clean"] * x.shape[0], []
        for name in self.attacks:
            budget = self.queries if name in QUERY_BASED else self.iters
            atk = make_attack(name, self.model, self.threat, budget, k, self.seed, threshold=tau)
            reason = atk.skip_reason(k)
            if reason:
                self.info["skipped"][name] = reason
                continue
            x_adv = atk(x, y, lo, hi)
            with frozen(self.model), torch.no_grad():
                pred = self.model(x_adv).argmax(1)
            mine = [measure(dict(case=str(i), attack=name, attack_id=name, eps=float(self.threat.eps), budget=budget),
                            pred[i:i + 1], y[i:i + 1], x_adv[i:i + 1], x[i:i + 1], lo[i:i + 1], hi[i:i + 1],
                            self.threat, k, tau, **atk.counters()) for i in range(x.shape[0])]
            records += mine
            dice = torch.tensor([r.dice for r in mine], device=best.device, dtype=best.dtype)
            self.info["dice"][name] = dice.tolist()
            better = (dice < best) & torch.tensor([r.valid() for r in mine], device=best.device)
            best_x = torch.where(better.view(-1, *[1] * (x.ndim - 1)), x_adv, best_x)
            best = torch.where(better, dice, best)
            winner = [name if b else w for b, w in zip(better.tolist(), winner)]
        self.info.update(worst_case_dice=best.tolist(), worst_attack=winner, records=records,
                         robust_accuracy=float((best >= tau).float().mean()))
        self.checks = [checks.ball_box_finite(records), checks.determinism(self.model, x[:1]),
                       checks.input_gradients([(str(i), self.model, x[i:i + 1], y[i:i + 1]) for i in range(x.shape[0])]),
                       checks.logits_not_probabilities(self.model, x[:1]), checks.blackbox_not_stronger(records)]
        return best_x
