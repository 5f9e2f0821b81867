"""FAB-T (Croce & Hein 2020), targeted, L-inf, adapted to segmentation's success criterion.

FAB is a minimum-norm attack: it linearises a decision boundary at the current point, steps
to the closest point of that hyperplane (overshooting by `eta`, biased back towards the clean
input by up to `alpha_max`), and once the point is adversarial moves it back towards the
clean input by `beta` to shrink the perturbation.

In segmentation an instance is adversarial when its Dice falls below the success threshold
tau (default: half its clean Dice), not when one decision flips. A boundary of the mean voxel
margin misses that: once the mean margin crosses 0 with Dice still above tau, the projection
pushes the point back and the search hovers outside the ball. Here the boundary is Dice = tau
itself: at u, FAB's hyperplane is {d : D(u) - tau + grad S(u) . d = 0}, D the instance's
(hard) Dice and S a differentiable surrogate of it, the soft Dice of a two-way prediction per
voxel between its label y and its target t (its `rank`-th most likely class on the clean
input): q = sigmoid((z_y - z_t) / s) stays with y, 1 - q goes to t, s being the instance's
mean |z_y - z_t| (so the surrogate is as steep whatever the scale of the logits). The step
asks the surrogate for exactly the Dice drop still needed, no more: on the non-adversarial
side it moves out by what is missing, on the adversarial side back towards the boundary, and
after each success `beta` pulls the point towards the clean input, so the iterates bracket
the smallest adversarial norm as FAB's do for one decision.

Only points inside the eps-ball may be returned. `info["found"]` says, per instance, whether
a point with Dice < tau was found within eps; `info["min_norm"]` the smallest adversarial
norm seen (inf if none); `info["reason"]` why nothing was found where so.
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


def soft_dice_to_target(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Differentiable surrogate of the Dice when voxels move from their label y to their
    target t: q = sigmoid((z_y - z_t) / s) of each voxel stays with y and 1 - q goes to t
    (s: the instance's mean |z_y - z_t|, detached); soft Dice of that prediction against y,
    mean over foreground classes. logits `[B, K, ...]`, y and target `[B, ...]` -> `[B]`."""
    diff = (logits.gather(1, y.unsqueeze(1)) - logits.gather(1, target.unsqueeze(1))).squeeze(1)
    s = diff.detach().abs().flatten(1).mean(1).clamp(min=1e-6).view(-1, *[1] * (diff.ndim - 1))
    q = torch.sigmoid(diff / s)
    q = torch.where(target == y, torch.ones_like(q), q)  # nowhere to move
    dice = []
    for k in range(1, num_classes):
        truth = (y == k).to(q.dtype)
        pred = truth * q + (target == k).to(q.dtype) * (1 - q)
        inter, total = (pred * truth).flatten(1).sum(1), (pred + truth).flatten(1).sum(1)
        dice.append(torch.where(total > 0, 2 * inter / total.clamp(min=1e-12), torch.ones_like(total)))
    return torch.stack(dice, 1).mean(1)


class FAB(Attack):
    name = "fab-t"
    norms = ("linf",)

    def __init__(self, model, threat, iters: int = 5, target_ranks: int = 1, restarts: int = 1,
                 eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1,
                 bisections: int = 5, threshold: float | None = None, num_classes=None, seed: int = 0):
        super().__init__(model, threat, num_classes, seed)
        self.iters, self.target_ranks, self.restarts = iters, target_ranks, restarts
        self.eta, self.beta, self.alpha_max, self.threshold = eta, beta, alpha_max, threshold
        self.bisections = bisections

    def perturb(self, u0, y, forward, tracker, logits0):
        b = u0.shape[0]
        view = (-1, *[1] * (u0.ndim - 1))
        r = self.threat.radius
        threshold = (torch.full((b,), self.threshold, device=u0.device) if self.threshold is not None
                     else tracker.clean_dice / 2)
        order = logits0.argsort(dim=1)
        k = logits0.shape[1]
        self._best_norm = torch.full((b,), float("inf"), device=u0.device)
        self._lowest_dice = tracker.clean_dice.clone()  # anywhere, inside the ball or not
        self._best_adv = u0.clone()
        runs = 0
        for rank in range(2, min(self.target_ranks, logits0.shape[1] - 1) + 2):
            target = order[:, -rank]
            for restart in range(self.restarts):
                u = u0.clone() if restart == 0 else self.random_start(u0)
                for _ in range(self.iters):
                    logits, _, grad = gradient(forward, u, lambda z: soft_dice_to_target(z, y, target, k))
                    g = self._record(u, u0, logits, tracker, threshold) - threshold
                    d1 = project_linf_hyperplane(u, grad, -g)
                    g0 = g + (grad * (u0 - u)).flatten(1).sum(1)  # the same hyperplane, seen from u0
                    d2 = project_linf_hyperplane(u0, grad, -g0)
                    a1 = d1.flatten(1).abs().max(1).values
                    a2 = d2.flatten(1).abs().max(1).values
                    alpha = (a1 / (a1 + a2 + 1e-12)).clamp(0, self.alpha_max).view(view)
                    u = ((u + self.eta * d1) * (1 - alpha) + (u0 + self.eta * d2) * alpha).clamp(0, 1)
                    with torch.no_grad():
                        logits = forward(u)
                    adv = self._record(u, u0, logits, tracker, threshold) < threshold
                    # once adversarial, move back towards the clean input to shrink the norm
                    u = torch.where(adv.view(view), u0 + (u - u0) * self.beta, u)
                runs += 1
        self._bisect(u0, forward, tracker, threshold)
        found = self._best_norm <= r * (1 + 1e-6)
        self.info["iterations"] = self.iters * runs
        self.info["found"] = found.tolist()
        self.info["min_norm"] = (self._best_norm * 255).tolist()
        self.info["reason"] = [None if f else self._why_not(n, d, t) for f, n, d, t in
                               zip(found.tolist(), self.info["min_norm"], self._lowest_dice.tolist(),
                                   threshold.tolist())]

    def _bisect(self, u0, forward, tracker, threshold) -> None:
        """Shrink the smallest adversarial perturbation found along its ray from the clean
        input: `bisections` forward passes, keeping the smallest scale still adversarial."""
        view = (-1, *[1] * (u0.ndim - 1))
        have = torch.isfinite(self._best_norm)
        if not bool(have.any()):
            return
        lo, hi = torch.zeros_like(self._best_norm), torch.ones_like(self._best_norm)
        d = self._best_adv - u0
        for _ in range(self.bisections):
            mid = (lo + hi) / 2
            u = u0 + d * mid.view(view)
            with torch.no_grad():
                adv = (self._record(u, u0, forward(u), tracker, threshold) < threshold) & have
            hi = torch.where(adv, mid, hi)
            lo = torch.where(adv, lo, mid)

    def _why_not(self, norm: float, lowest: float, tau: float) -> str:
        if norm != float("inf"):
            return (f"smallest adversarial perturbation found is {norm:.1f}/255, outside the ball "
                    f"({self.threat.eps:g}/255)")
        return (f"no point with Dice < {tau:.3f} reached in {self.iters} iteration(s) "
                f"(lowest Dice seen {lowest:.3f}, inside or outside the ball)")

    def _record(self, u, u0, logits, tracker, threshold):
        norm = (u - u0).flatten(1).abs().max(1).values
        inside = norm <= self.threat.radius * (1 + 1e-6)
        dice = tracker.update(u, logits, valid=inside)
        adv = dice < threshold
        self._lowest_dice = torch.minimum(self._lowest_dice, dice)
        smaller = adv & (norm < self._best_norm)
        self._best_norm = torch.where(smaller, norm, self._best_norm)
        self._best_adv = torch.where(smaller.view(-1, *[1] * (u.ndim - 1)), u.detach(), self._best_adv)
        return dice
