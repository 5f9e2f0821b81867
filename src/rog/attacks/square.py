"""Square Attack (Andriushchenko et al. 2020), L-inf, in 3D: cubes instead of squares.

Score-based (black-box): only the model's outputs are used. Initialisation with stripes of
+-eps (constant along all but the last spatial axis, per channel); each query replaces the
perturbation inside one random cube with +-eps per channel (so it moves by up to 2 eps) and
is kept if the objective improves, one candidate at a time as in Square. The cube's share of
the volume is `p_init` at the first query after the stripes and halves at AutoAttack's
schedule (search queries 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, rescaled to 10,000);
a cube may start at any position where it fits (AutoAttack's `randint(0, h - s)` never
starts one at the last, so there the last row and column change only through the stripes).
The side is taken over the spatial axes longer than one voxel, so a volume one voxel deep
gets Square's squares. A cube whose new
values equal the current ones (the signs already there, or clamped to the same box edge) would
spend a query on a point already evaluated: its signs are redrawn (as in AutoAttack), then
flipped if still so; `redraw_noops=False` spends those queries, as a plain schedule would.

The objective is the one success is measured by: the hard Dice, lowered; ties (a cube that
flips no voxel leaves it unchanged) are broken by `losses.correct_margin`, the margins of the
voxels still right, balanced over classes, so the search is not led by the confident
background and is not rewarded for pushing voxels already wrong further. On a classifier
broadcast to every voxel this is Square's margin loss.
"""
from __future__ import annotations

import math

import torch

from rog.attacks import losses
from rog.attacks.base import Attack

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, query: int, total: int) -> float:
    """The cube's share at search query `query` (0 first, after the stripes) of `total`."""
    it = int(query / max(total, 1) * 10000)
    return p_init / 2 ** sum(it > s for s in SCHEDULE)


def cube_side(p: float, spatial: list[int]) -> list[int]:
    """Side per spatial axis of a cube covering about a share `p` of the volume; axes of one
    voxel keep side 1 and do not count (a square on a one-voxel-deep volume)."""
    long = [s for s in spatial if s > 1]
    volume = math.prod(long)
    side = round((p * volume) ** (1 / max(len(long), 1)))
    return [max(1, min(s, side)) if s > 1 else 1 for s in spatial]


class Square(Attack):
    """Square (Andriushchenko et al. 2020), the black-box member of the ensemble.

    Args:
        model: as `APGD`.
        threat: as `APGD` (L-inf only).
        queries: model evaluations per instance.
        window_cache: see below.

    On a model with a `window_cache(x)`
    (`rog.infer.SlidingWindow`: volume scope), `window_cache` keeps every window's logits so
    that a query re-runs only the windows its cube overlaps (same results; memory: the logits
    of every window). Default (None): on for CPU inputs, off for CUDA ones, where re-assembling
    the volume from cached windows measured slower than re-running them (docs/benchmarks.md)."""

    name = "square"
    norms = ("linf",)

    def __init__(self, model, threat, queries: int = 500, p_init: float = 0.8, window_cache: bool | None = None,
                 redraw_noops: bool = True, num_classes=None, seed: int = 0):
        super().__init__(model, threat, num_classes, seed)
        self.queries, self.p_init = queries, p_init
        self.window_cache, self.redraw_noops = window_cache, redraw_noops

    def _rand(self, *shape, high=None):
        g, dev = self.generator, self.device
        if high is not None:
            return torch.randint(0, high, shape, generator=g, device=dev)
        return torch.rand(shape, generator=g, device=dev)

    def _signs(self, *shape):
        return self._rand(*shape, high=2).to(self.dtype) * 2 - 1

    def _cube_signs(self, u0, u_best, boxes, r) -> tuple[torch.Tensor, int]:
        """(signs `[B, C, 1, ...]` times r for the cubes `boxes`, one per instance; how many
        leave their point unchanged). A cube is a no-op when its new values, clamped to the
        box, equal the current ones; with `redraw_noops` its signs are redrawn once, then
        flipped where still a no-op: the opposite signs move every voxel of the cube when r > 0."""
        c, ones = u0.shape[1], [1] * (u0.ndim - 2)

        tol = float(torch.as_tensor(self.threat.peak).max()) * 1e-3

        def noops(signs):
            # a real change moves some voxel by about r (the largest channel's) or more; float
            # round trips by far less
            return torch.stack([((u0[i][(slice(None), *box)] + signs[i]).clamp(0, 1)
                                 - u_best[i][(slice(None), *box)]).abs().amax() <= tol
                                for i, box in enumerate(boxes)]).view(-1, 1, *ones)

        signs = self._signs(len(boxes), c, *ones) * r
        if self.redraw_noops:
            signs = torch.where(noops(signs), self._signs(len(boxes), c, *ones) * r, signs)
            signs = torch.where(noops(signs), -signs, signs)
        return signs, int(noops(signs).sum())

    def perturb(self, u0, y, forward, tracker, logits0):
        self.device, self.dtype = u0.device, u0.dtype
        r = self.threat.radius_like(u0)  # `[1, C, 1, 1, 1]` where channels have their own radius
        b, c, *spatial = u0.shape
        view = (-1, *[1] * (u0.ndim - 1))
        stripes = self._signs(b, c, *[1] * (len(spatial) - 1), spatial[-1]) * r
        u_best = self.threat.project(u0 + stripes, u0)
        # in volume scope, a query re-runs only the windows its cube overlaps
        use_cache = self.window_cache if self.window_cache is not None else not u0.is_cuda
        cache = (self.model.window_cache(self.input_of(u_best))
                 if use_cache and hasattr(self.model, "window_cache") else None)
        with torch.no_grad():
            logits = cache.volume(range(b)) if cache else forward(u_best)
        # the objective, both to be lowered: the hard Dice (the tracker's), then the margin
        margin_of = self.scored_loss(losses.correct_margin)
        best_dice, best_margin = tracker.update(u_best, logits), margin_of(logits, y)
        used, noops = 1, 0
        owners = list(range(b))
        while used < self.queries:
            # the search's queries are those after the stripes': the first one gets p_init
            side = cube_side(p_selection(self.p_init, used - 1, self.queries - 1), spatial)
            # one draw (and one device sync) per query for every instance's corner
            corners = torch.stack([self._rand(b, high=s - w + 1) for s, w in zip(spatial, side)], 1).tolist()
            boxes = [tuple(slice(o, o + w) for o, w in zip(corner, side)) for corner in corners]
            signs, left = self._cube_signs(u0, u_best, boxes, r)
            noops += left
            cand = u_best.clone()
            for i, box in enumerate(boxes):
                cand[(i, slice(None), *box)] = u0[i][(slice(None), *box)] + signs[i]
            cand = self.threat.project(cand, u0)
            with torch.no_grad():
                logits = cache.evaluate(self.input_of(cand), boxes, owners) if cache else forward(cand)
            dice, margin = tracker.update(cand, logits), margin_of(logits, y)
            improved = (dice < best_dice) | ((dice == best_dice) & (margin < best_margin))
            u_best = torch.where(improved.view(view), cand, u_best)
            best_dice = torch.where(improved, dice, best_dice)
            best_margin = torch.where(improved, margin, best_margin)
            if cache:
                for inst in improved.nonzero().flatten().tolist():
                    cache.commit(inst, inst)
            used += 1
        self.info["queries"] = used
        self.info["noop_queries"] = noops
