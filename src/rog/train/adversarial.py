"""Adversarial training steps: Free AT (Shafahi et al. 2019) and PGD-AT (Madry et al. 2018).

Both use the benchmark's threat model (`rog.attacks.ThreatModel`), with the training patch's
own channel range as the box (the whole case is not at hand): radius eps / 255 * (hi - lo).
Free AT replays each minibatch `replays` times; each replay takes one optimiser step on the
perturbed batch and one signed-gradient step of size eps on a perturbation buffer that is
carried across minibatches. The public code's step, `(eps_abs // 2) * sign(grad)`, rounds to
zero on z-scored data; here the step is the radius itself and is never zero for eps > 0.
PGD-AT's examples come from the benchmark's own `PGD` attack.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rog.attacks import PGD, ThreatModel


class FreeAT:
    """State of Free adversarial training: the persistent perturbation buffer."""

    def __init__(self, eps: float, replays: int = 5):
        self.threat, self.replays = ThreatModel(eps), replays
        self.delta: torch.Tensor | None = None
        self.last_ratio = 0.0  # |delta|_inf / radius of the last replay, for the log

    def step(self, x: torch.Tensor, y: torch.Tensor, train_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
        """Replay the minibatch; `train_step(x_in, y)` runs forward, backward and the optimiser
        step and returns the loss with `x_in` requiring grad. Returns the mean loss."""
        lo, hi = ThreatModel.channel_range(x)
        radius = self.threat.radius_of(lo, hi)
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x)
        total = 0.0
        for _ in range(self.replays):
            delta = torch.maximum(torch.minimum(self.delta, radius), -radius)
            x_in = torch.maximum(torch.minimum(x + delta, hi), lo).requires_grad_(True)
            total += float(train_step(x_in, y))
            grad = x_in.grad.detach()
            self.delta = torch.maximum(torch.minimum(delta + radius * grad.sign(), radius), -radius)
            self.last_ratio = float((self.delta.abs() / radius.clamp(min=1e-12)).flatten(1).max(1).values.mean())
        return total / self.replays


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int) -> torch.Tensor:
    """PGD-AT inputs `[B, C, ...]` for a batch x `[B, C, ...]`, y `[B, ...]`: the benchmark's
    PGD (CE, `steps` steps of 2.5 eps / steps from a random start seeded by `seed`, the lowest
    Dice iterate kept) with the batch's own channel ranges as the box. The weights are frozen
    meanwhile; they receive their gradients in the training step that follows."""
    return PGD(model, ThreatModel(eps), iters=steps, seed=seed)(x, y)
