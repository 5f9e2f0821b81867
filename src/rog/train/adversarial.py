"""Adversarial training steps: Free AT (Shafahi et al. 2019) and PGD-AT (Madry et al. 2018).

Both use the threat model of the attacks (DESIGN.md), with the training patch's own channel
range as the box (the whole case is not at hand): eps_abs = eps / 255 * (hi - lo). Free AT
replays each minibatch `replays` times; each replay takes one optimiser step on the
perturbed batch and one signed-gradient step of size eps on a perturbation buffer that is
carried across minibatches. The public code's step, `(eps_abs // 2) * sign(grad)`, rounds to
zero on z-scored data; here the step is eps_abs itself and is never zero for eps > 0.
"""
from __future__ import annotations

from typing import Callable

import torch

from rog.attacks.threat import ThreatModel


def _box(x: torch.Tensor, eps: float):
    lo, hi = ThreatModel.channel_range(x)
    return lo, hi, eps / 255.0 * (hi - lo)


class FreeAT:
    """State of Free adversarial training: the persistent perturbation buffer."""

    def __init__(self, eps: float, replays: int = 5):
        self.eps, self.replays = eps, replays
        self.delta: torch.Tensor | None = None
        self.last_ratio = 0.0  # |delta|_inf / eps_abs of the last replay, for the log

    def step(self, x: torch.Tensor, y: torch.Tensor, train_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
        """Replay the minibatch; `train_step(x_in, y)` runs forward, backward and the optimiser
        step and returns the loss with `x_in` requiring grad. Returns the mean loss."""
        lo, hi, eps_abs = _box(x, self.eps)
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x)
        total = 0.0
        for _ in range(self.replays):
            delta = torch.maximum(torch.minimum(self.delta, eps_abs), -eps_abs)
            x_in = torch.maximum(torch.minimum(x + delta, hi), lo).requires_grad_(True)
            total += float(train_step(x_in, y))
            grad = x_in.grad.detach()
            self.delta = torch.maximum(torch.minimum(delta + eps_abs * grad.sign(), eps_abs), -eps_abs)
            self.last_ratio = float((self.delta.abs() / eps_abs.clamp(min=1e-12)).flatten(1).max(1).values.mean())
        return total / self.replays


def pgd_examples(model, loss_fn, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """PGD-AT inputs: `steps` signed-gradient steps of 2.5 eps / steps from a random start,
    input gradients only (the weights receive theirs in the training step that follows)."""
    lo, hi, eps_abs = _box(x, eps)
    delta = (torch.rand_like(x) * 2 - 1) * eps_abs
    for _ in range(steps):
        x_in = torch.maximum(torch.minimum(x + delta, hi), lo).requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(model(x_in), y), x_in)
        delta = torch.maximum(torch.minimum(delta + 2.5 / steps * eps_abs * grad.sign(), eps_abs), -eps_abs)
    return torch.maximum(torch.minimum(x + delta, hi), lo).detach()
