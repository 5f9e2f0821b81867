"""Square Attack (Andriushchenko et al. 2020), L-inf, in 3D: cubes instead of squares.

Score-based (black-box): only the model's outputs are used. Initialisation with stripes of
+-eps (constant along all but the last spatial axis, per channel); each query replaces the
perturbation inside one random cube with +-eps per channel (so it moves by up to 2 eps) and
is kept if the objective improves. The cube's share of the volume starts at `p_init` and
halves at AutoAttack's schedule (queries 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000,
rescaled to 10,000 queries). `candidates` cubes per instance are evaluated in one batch per
step (each counts as a query); the best improving one is kept. A cube whose new values equal
the current ones (the signs already there, or clamped to the same box edge) would spend a
query on a point already evaluated: its signs are redrawn (as in AutoAttack), then flipped if
still so; `redraw_noops=False` spends those queries, as a plain schedule would.
"""
from __future__ import annotations

import torch

from rog.attacks import losses
from rog.attacks.base import Attack

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, query: int, total: int) -> float:
    it = int(query / max(total, 1) * 10000)
    return p_init / 2 ** sum(it > s for s in SCHEDULE)


class Square(Attack):
    """`objective`: "margin" (mean voxel margin, as Square's margin loss) or "dice" (soft
    Dice of the softmax), minimised; `queries`: model evaluations per instance. On a model
    with a `window_cache(x)` (`rog.infer.SlidingWindow`: volume scope), `window_cache` keeps every window's logits so that
    a query re-runs only the windows its cube overlaps (same results; memory: the logits of
    every window). Default (None): on for CPU inputs, off for CUDA ones, where re-assembling
    the volume from cached windows measured slower than re-running them (docs/benchmarks.md)."""

    name = "square"
    norms = ("linf",)

    def __init__(self, model, threat, queries: int = 500, p_init: float = 0.8, objective: str = "margin",
                 candidates: int = 4, window_cache: bool | None = None, redraw_noops: bool = True,
                 num_classes=None, seed: int = 0):
        super().__init__(model, threat, num_classes, seed)
        if objective not in ("margin", "dice"):
            raise ValueError(f"unknown Square objective {objective!r}")
        self.queries, self.p_init, self.objective, self.candidates = queries, p_init, objective, candidates
        self.window_cache, self.redraw_noops = window_cache, redraw_noops

    def _objective(self, logits, y):
        # both to be minimised: the model's margin, or its soft Dice
        return -losses.margin(logits, y) if self.objective == "margin" else 1 - losses.soft_dice_loss(logits, y)

    def _rand(self, *shape, high=None):
        g, dev = self.generator, self.device
        if high is not None:
            return torch.randint(0, high, shape, generator=g, device=dev)
        return torch.rand(shape, generator=g, device=dev)

    def _signs(self, *shape):
        return self._rand(*shape, high=2).to(self.dtype) * 2 - 1

    def _cube_signs(self, u0, u_best, boxes, owners, r) -> tuple[torch.Tensor, int]:
        """(signs `[N, C, 1, ...]` times r for the N cubes `boxes`, how many leave their point
        unchanged). A cube is a no-op when its new values, clamped to the box, equal the
        current ones; with `redraw_noops` its signs are redrawn once, then flipped where still
        a no-op: the opposite signs move every voxel of the cube when r > 0."""
        c, ones = u0.shape[1], [1] * (u0.ndim - 2)

        def noops(signs):
            # a real change moves some voxel by about r or more; float round trips by far less
            return torch.stack([((u0[o][(slice(None), *box)] + signs[i]).clamp(0, 1)
                                 - u_best[o][(slice(None), *box)]).abs().amax() <= r * 1e-3
                                for i, (o, box) in enumerate(zip(owners, boxes))]).view(-1, 1, *ones)

        signs = self._signs(len(boxes), c, *ones) * r
        if self.redraw_noops:
            signs = torch.where(noops(signs), self._signs(len(boxes), c, *ones) * r, signs)
            signs = torch.where(noops(signs), -signs, signs)
        return signs, int(noops(signs).sum())

    def perturb(self, u0, y, forward, tracker, logits0):
        self.device, self.dtype = u0.device, u0.dtype
        r = self.threat.radius
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
        tracker.update(u_best, logits)
        best = self._objective(logits, y)
        used, noops = 1, 0
        volume = float(torch.tensor(spatial).prod())
        q = self.candidates
        while used < self.queries:
            n = min(q, self.queries - used)
            p = p_selection(self.p_init, used, self.queries)
            side = [max(1, min(s, round((p * volume) ** (1 / len(spatial))))) for s in spatial]
            cand = u_best.repeat_interleave(n, 0)  # [B*n, C, ...]
            # one draw (and one device sync) per step for all corners and signs
            corners = torch.stack([self._rand(b * n, high=s - w + 1) for s, w in zip(spatial, side)], 1).tolist()
            boxes = [tuple(slice(o, o + w) for o, w in zip(corner, side)) for corner in corners]
            owners = [i // n for i in range(b * n)]
            signs, left = self._cube_signs(u0, u_best, boxes, owners, r)
            noops += left
            for i, box in enumerate(boxes):
                cand[(i, slice(None), *box)] = u0[i // n][(slice(None), *box)] + signs[i]
            cand = self.threat.project(cand, u0.repeat_interleave(n, 0))
            with torch.no_grad():
                logits = (cache.evaluate(self.input_of(cand), boxes, owners)
                          if cache else forward(cand))
            obj = self._objective(logits, y.repeat_interleave(n, 0)).view(b, n)
            pick = obj.argmin(1)
            chosen = torch.arange(b, device=u0.device) * n + pick
            improved = obj.gather(1, pick[:, None]).squeeze(1) < best
            u_new = torch.where(improved.view(view), cand[chosen], u_best)
            best = torch.where(improved, obj.gather(1, pick[:, None]).squeeze(1), best)
            for j in range(n):  # every candidate is a point the attack evaluated
                idx = torch.arange(b, device=u0.device) * n + j
                tracker.update(cand[idx], logits[idx])
            if cache:
                for inst in improved.nonzero().flatten().tolist():
                    cache.commit(int(chosen[inst]), inst)
            u_best = u_new
            used += n
        self.info["queries"] = used
        self.info["noop_queries"] = noops
