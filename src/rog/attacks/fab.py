"""FAB-T (Croce & Hein 2020), targeted, L-inf, adapted to segmentation.

FAB is a minimum-norm attack: it linearises the boundary between the true and a target class
and steps to the closest point of that hyperplane, biased back towards the clean input, and
shrinks the perturbation once the point is adversarial. Segmentation has one decision per
voxel, so the boundary here is the scalar g(u) = mean over voxels of (z_y - z_t), the
target t of a voxel being its `rank`-th most likely class on the clean input: g <= 0 means
the target wins on average. A point counts as adversarial when its Dice falls below the
success threshold (default: half the instance's clean Dice). Only points inside the eps-ball
may be returned; `info["found"]` says, per instance, whether an adversarial point within
eps was found. The paper reports that FAB finds none on segmentation; this says so when so.
"""
from __future__ import annotations

import torch

from rog.attacks.base import Attack, gradient


def project_linf_hyperplane(u: torch.Tensor, w: torch.Tensor, c: torch.Tensor, steps: int = 40) -> torch.Tensor:
    """Smallest L-inf step d (per instance) with w.d = c and u + d in [0, 1]; where the box
    makes the hyperplane unreachable, the step that gets closest. Shapes: u, w `[B, ...]`,
    c `[B]`; returns d like u. Solved by bisection on the L-inf radius (d is monotone in it)."""
    view = (-1, *[1] * (u.ndim - 1))
    direction = torch.sign(w) * torch.sign(c).view(view)  # each coordinate's best direction
    room = torch.where(direction > 0, 1 - u, u)  # how far the box lets it go that way
    lo = torch.zeros_like(c)
    hi = torch.ones_like(c)
    for _ in range(steps):
        mid = (lo + hi) / 2
        reach = (w.abs() * torch.minimum(room, mid.view(view))).flatten(1).sum(1)
        enough = reach >= c.abs()
        hi = torch.where(enough, mid, hi)
        lo = torch.where(enough, lo, mid)
    return direction * torch.minimum(room, hi.view(view))


class FAB(Attack):
    name = "fab-t"

    def __init__(self, model, threat, iters: int = 5, target_ranks: int = 1, restarts: int = 1,
                 eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1,
                 threshold: float | None = None, num_classes=None, seed: int = 0):
        super().__init__(model, threat, num_classes, seed)
        if threat.norm != "linf":
            raise ValueError("FAB is implemented for the L-inf threat model")
        self.iters, self.target_ranks, self.restarts = iters, target_ranks, restarts
        self.eta, self.beta, self.alpha_max, self.threshold = eta, beta, alpha_max, threshold
        self.min_classes = 2

    def perturb(self, u0, y, forward, tracker, logits0):
        b = u0.shape[0]
        view = (-1, *[1] * (u0.ndim - 1))
        r = self.threat.radius
        threshold = (torch.full((b,), self.threshold, device=u0.device) if self.threshold is not None
                     else tracker.clean_dice / 2)
        order = logits0.argsort(dim=1)
        best_norm = torch.full((b,), float("inf"), device=u0.device)
        runs = 0
        for rank in range(2, min(self.target_ranks, logits0.shape[1] - 1) + 2):
            target = order[:, -rank]
            for restart in range(self.restarts):
                u = u0.clone() if restart == 0 else self.random_start(u0)
                for _ in range(self.iters):
                    logits, g, grad = gradient(forward, u, lambda z: (
                        z.gather(1, y.unsqueeze(1)) - z.gather(1, target.unsqueeze(1))).flatten(1).mean(1))
                    self._record(u, u0, logits, tracker, threshold, best_norm, r)
                    d1 = project_linf_hyperplane(u, grad, -g)
                    g0 = g + (grad * (u0 - u)).flatten(1).sum(1)  # the same hyperplane, seen from u0
                    d2 = project_linf_hyperplane(u0, grad, -g0)
                    a1 = d1.flatten(1).abs().max(1).values
                    a2 = d2.flatten(1).abs().max(1).values
                    alpha = (a1 / (a1 + a2 + 1e-12)).clamp(0, self.alpha_max).view(view)
                    u = ((u + self.eta * d1) * (1 - alpha) + (u0 + self.eta * d2) * alpha).clamp(0, 1)
                    with torch.no_grad():
                        logits = forward(u)
                    adv = self._record(u, u0, logits, tracker, threshold, best_norm, r)
                    # once adversarial, move back towards the clean input to shrink the norm
                    u = torch.where(adv.view(view), u0 + (u - u0) * self.beta, u)
                runs += 1
        self.info["iterations"] = self.iters * runs
        self.info["found"] = (best_norm <= r * (1 + 1e-6)).tolist()
        self.info["min_norm"] = (best_norm * 255).tolist()

    def _record(self, u, u0, logits, tracker, threshold, best_norm, r):
        norm = (u - u0).flatten(1).abs().max(1).values
        inside = norm <= r * (1 + 1e-6)
        dice = tracker.update(u, logits, valid=inside)
        adv = dice < threshold
        best_norm.copy_(torch.where(adv & (norm < best_norm), norm, best_norm))
        return adv
