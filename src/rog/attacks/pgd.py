"""PGD with random start (Madry et al. 2018), its segmentation variants SegPGD and CosPGD, and
a PGD with a decaying step on the voxels still right."""
from __future__ import annotations

import math

from rog.attacks import losses
from rog.attacks.base import Attack, gradient


class PGD(Attack):
    """PGD (Madry et al. 2018): signed-gradient steps from a uniform random start, each
    projected on the ball and box.

    Args:
        model: as `APGD`.
        threat: as `APGD`.
        iters: steps.
        step: their size (default 2.5 eps / iters).
        loss: "ce" (the paper's baseline), "segpgd", "cospgd" or "ce-right" (`losses.ce_right`).
        restarts: independent runs (the lowest Dice kept)."""

    name = "pgd"

    def __init__(self, model, threat, iters: int = 5, step: float | None = None, restarts: int = 1,
                 random_start: bool = True, loss: str = "ce", num_classes=None, seed: int = 0):
        super().__init__(model, threat, num_classes, seed)
        if loss not in ("ce", "segpgd", "cospgd", "ce-right"):
            raise ValueError(f"unknown PGD loss {loss!r}")
        self.iters, self.restarts, self.rand_init, self.loss = iters, restarts, random_start, loss
        self.step = step

    def _loss(self, t: int):
        if self.loss == "segpgd":
            return self.scored_loss(lambda z, y: losses.segpgd(z, y, t, self.iters))
        return self.scored_loss({"cospgd": losses.cospgd, "ce-right": losses.ce_right}.get(self.loss, losses.ce))

    def step_at(self, t: int):
        """The step of iteration t: constant, 2.5 eps / iters by default (Madry et al.)."""
        return self.step if self.step is not None else 2.5 * self.threat.peak / max(self.iters, 1)

    def perturb(self, u0, y, forward, tracker, logits0):
        for _ in range(self.restarts):
            u = self.random_start(u0) if self.rand_init else u0.clone()
            for t in range(self.iters):
                loss_fn = self._loss(t)
                logits, _, grad = gradient(forward, u, lambda z: loss_fn(z, y))
                tracker.update(u, logits)
                u = self.threat.project(self.ascent(u, grad, self.step_at(t)), u0)
            tracker.update(u, forward(u).detach())
        self.info["iterations"] = self.iters * self.restarts


class SegPGD(PGD):
    """PGD on SegPGD's loss (Gu et al. 2022): CE of the voxels still right weighted against
    the voxels already wrong, the weight moving to the wrong ones over the iterations."""

    name = "segpgd"

    def __init__(self, model, threat, iters: int = 5, **kw):
        super().__init__(model, threat, iters, loss="segpgd", **kw)


class CosPGD(PGD):
    """PGD on CosPGD's loss (Agnihotri and Keuper 2024): each voxel's CE weighted by the cosine
    similarity of its softmax and its one-hot label, so the voxels still right weigh most."""

    name = "cospgd"

    def __init__(self, model, threat, iters: int = 5, **kw):
        super().__init__(model, threat, iters, loss="cospgd", **kw)


class RightPGD(PGD):
    """PGD on the voxels still right, with a decaying step: CE of the correct voxels only
    (`losses.ce_right`) and a cosine schedule from eps down to 0 (`step` sets the first), so
    the effort follows the voxels left to break and the last steps refine rather than
    bounce between the ball's corners."""

    name = "pgd-right"

    def __init__(self, model, threat, iters: int = 5, **kw):
        super().__init__(model, threat, iters, loss="ce-right", **kw)

    def step_at(self, t):
        first = self.step if self.step is not None else self.threat.peak
        return first * 0.5 * (1 + math.cos(math.pi * t / max(self.iters, 1)))
