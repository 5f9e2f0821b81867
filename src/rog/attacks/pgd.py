"""PGD with random start (Madry et al. 2018) and its segmentation variants SegPGD and CosPGD."""
from __future__ import annotations

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
        loss: "ce" (the paper's baseline), "segpgd" or "cospgd".
        restarts: independent runs (the lowest Dice kept)."""

    name = "pgd"

    def __init__(self, model, threat, iters: int = 5, step: float | None = None, restarts: int = 1,
                 random_start: bool = True, loss: str = "ce", num_classes=None, seed: int = 0):
        super().__init__(model, threat, num_classes, seed)
        if loss not in ("ce", "segpgd", "cospgd"):
            raise ValueError(f"unknown PGD loss {loss!r}")
        self.iters, self.restarts, self.rand_init, self.loss = iters, restarts, random_start, loss
        self.step = step

    def _loss(self, t: int):
        if self.loss == "segpgd":
            return lambda z, y: losses.segpgd(z, y, t, self.iters)
        return losses.cospgd if self.loss == "cospgd" else losses.ce

    def perturb(self, u0, y, forward, tracker, logits0):
        step = self.step if self.step is not None else 2.5 * self.threat.radius / max(self.iters, 1)
        for _ in range(self.restarts):
            u = self.random_start(u0) if self.rand_init else u0.clone()
            for t in range(self.iters):
                loss_fn = self._loss(t)
                logits, _, grad = gradient(forward, u, lambda z: loss_fn(z, y))
                tracker.update(u, logits)
                u = self.threat.project(self.ascent(u, grad, step), u0)
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
