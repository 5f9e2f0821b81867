"""FAB-T (Croce & Hein 2020), targeted, L-inf, adapted to segmentation's success criterion.

FAB is a minimum-norm attack: it linearises a decision boundary g(u) = 0 at the current
point, steps to the closest point of that hyperplane (overshooting by `eta`, biased back
towards the clean input by up to `alpha_max`), and once the point is adversarial moves it back
towards the clean input by `beta` to shrink the perturbation. The step is only as good as the
linearisation: g's value and its gradient must be the same function, in the same units.

In segmentation an instance is adversarial when its Dice falls below the success threshold
tau (default: half its clean Dice), not when one decision flips. Each voxel v has a target t_v
(its `rank`-th most likely class on the clean input) and a margin h_v = z_y - z_t, negative
once it has flipped. Sorting the margins says how many voxels must flip, weakest first, for
Dice to fall below tau: the j*-th smallest margin is then the instance's distance to success,
in logits, and for a piecewise-linear network it is piecewise linear in the input, as FAB's
classifier margin is. g(u) is that order statistic, smoothed as the mean margin over a band of
ranks around it (`band`: its half-width as a share of the voxels still to flip; voxels already
flipped stay out), so that its gradient speaks for the voxels about to flip rather than for one.
The candidates are the voxels labelled foreground: taking a voxel from its structure costs its
class a true positive, twice what a false positive costs, and a search that may also flip the
background tends to grow false positives, a costlier road to the same Dice. On a classifier
whose logits are broadcast to every voxel every margin is the same and g is FAB-T's boundary
exactly.

Only points inside the eps-ball may be returned. `info["found"]` says, per instance, whether
a point with Dice < tau was found within eps; `info["min_norm"]` the smallest adversarial
norm seen (inf if none); `info["reason"]` why nothing was found where so.
"""
from __future__ import annotations

import torch

from rog.attacks.base import Attack, gradient
from rog.attacks.losses import scored
from rog.evaluate.metrics import scored_sets, within


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


def flips_needed(h: torch.Tensor, y: torch.Tensor, target: torch.Tensor, num_classes: int,
                 tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate voxels sorted by margin and how many must flip for Dice < tau. h, y, target
    `[B, V]` (margins, inf where a voxel is no candidate; labels; targets; flattened), tau
    `[B]`. Returns (order `[B, V]`, ascending margins' voxel indices; count `[B]`, the smallest
    j such that the prediction with the j weakest voxels at their targets and every other voxel
    at its label has mean foreground Dice < tau, V where none has). Dice as `dice_batch`:
    classes (or `Regions`' regions) absent from both are left out."""
    b, v = h.shape
    order = h.argsort(1)
    candidate = torch.isfinite(h.gather(1, order))
    ys, ts = y.gather(1, order), target.gather(1, order)
    total = torch.zeros(b, v + 1, device=h.device)
    present = torch.zeros_like(total)
    zero = torch.zeros(b, 1, device=h.device)
    for labels in scored_sets(num_classes):  # a label alone, or a region's labels
        was, now = within(ys, labels), within(ts, labels)
        lost = torch.cat([zero, (was & ~now & candidate).cumsum(1).float()], 1)  # flipped out of the set
        gained = torch.cat([zero, (now & ~was & candidate).cumsum(1).float()], 1)  # flipped into it
        truth = within(y, labels).sum(1, keepdim=True).float()
        hit, denom = truth - lost, 2 * truth - lost + gained
        total += torch.where(denom > 0, 2 * hit / denom.clamp(min=1), 0.0)
        present += (denom > 0).float()
    dice = torch.where(present > 0, total / present.clamp(min=1), 1.0)
    below = dice < tau[:, None]
    count = torch.where(below.any(1), below.float().argmax(1), torch.full((b,), v, device=h.device))
    return order, count.long()


def distance_to_success(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor, num_classes: int,
                        tau: torch.Tensor, band: float) -> torch.Tensor:
    """g `[B]`, differentiable in the logits: the mean margin z_y - z_t over the band of ranks
    around the count-th smallest margin (`flips_needed`) among the candidate voxels (labelled
    foreground; an instance without any: every voxel) not yet flipped; g < 0 about when the
    voxels needed for Dice < tau have flipped. logits `[B, K, ...]`, y and target `[B, ...]`,
    tau `[B]`."""
    yf, tf = y.flatten(1), target.flatten(1)
    y, _ = scored(logits, y)
    h = (logits.gather(1, y.unsqueeze(1)) - logits.gather(1, target.unsqueeze(1))).flatten(1)
    b, v = h.shape
    with torch.no_grad():
        candidate = (yf > 0) & (yf < logits.shape[1])  # labelled foreground, not ignored
        candidate |= ~candidate.any(1, keepdim=True) & (yf < logits.shape[1])
        order, count = flips_needed(torch.where(candidate, h, float("inf")), yf, tf, num_classes, tau)
        flipped = ((h < 0) & candidate).sum(1)
        last = candidate.sum(1) - 1
        rank = torch.minimum((count - 1).clamp(min=0), last)  # the voxel whose flip crosses tau
        half = (band * (count - flipped).clamp(min=0).float()).long()
        ranks = torch.arange(v, device=h.device)[None]
        # voxels already flipped stay out: their (negative) margins would pull g below 0 while
        # Dice is still above tau, and the step would go the wrong way
        low = torch.maximum(rank - half, flipped)
        in_band = (ranks >= low[:, None]) & (ranks <= torch.minimum(rank + half, last)[:, None])
    hs = h.gather(1, order)
    return (hs * in_band).sum(1) / in_band.sum(1)


class FAB(Attack):
    """FAB-T (Croce and Hein 2020) for segmentation: the smallest perturbation that drives
    Dice below `threshold`.

    Args:
        model: as `APGD`.
        threat: as `APGD`.
        iters: steps per target and restart.
        target_ranks: targets (AutoAttack: 9; at most K - 1 are run).
        restarts: per target; the first from the clean input, later ones from a random point
            at half the smallest norm found, as AutoAttack.
        threshold: the success threshold tau (default: half each instance's clean Dice).

    After the steps, `bisections` forward passes along the best perturbation's ray.
    `info["found"]` says per instance whether a point within eps was found, `info["reason"]`
    why not."""

    name = "fab-t"
    norms = ("linf",)
    per_channel = False  # its hyperplane projection and bisection are in one L-inf radius

    def __init__(self, model, threat, iters: int = 5, target_ranks: int = 9, restarts: int = 1,
                 eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1, band: float = 2.0,
                 bisections: int = 5, threshold: float | None = None, num_classes=None, seed: int = 0):
        super().__init__(model, threat, num_classes, seed)
        self.iters, self.target_ranks, self.restarts = iters, target_ranks, restarts
        self.eta, self.beta, self.alpha_max, self.threshold = eta, beta, alpha_max, threshold
        self.band, self.bisections = band, bisections

    def targets(self, logits0: torch.Tensor, y: torch.Tensor):
        """The voxel targets `[B, ...]` of each rank 2..: the rank-th most likely class on the
        clean input, or the clean top class where that is the label (a voxel already wrong)."""
        order = logits0.argsort(dim=1, descending=True)
        for rank in range(2, min(self.target_ranks, logits0.shape[1] - 1) + 2):
            target = order[:, rank - 1]
            yield torch.where(target == y, order[:, 0], target)

    def perturb(self, u0, y, forward, tracker, logits0):
        b = u0.shape[0]
        view = (-1, *[1] * (u0.ndim - 1))
        r = self.threat.radius
        tau = (torch.full((b,), self.threshold, device=u0.device) if self.threshold is not None
               else tracker.clean_dice / 2)
        k = self.num_classes or logits0.shape[1]
        self._best_norm = torch.full((b,), float("inf"), device=u0.device)
        self._lowest_dice = tracker.clean_dice.clone()  # anywhere, inside the ball or not
        self._best_adv = u0.clone()
        runs = 0
        for target in self.targets(logits0, y):
            boundary = lambda z: distance_to_success(z, y, target, k, tau, self.band)  # noqa: E731
            for restart in range(self.restarts):
                u = u0.clone() if restart == 0 else self._restart_point(u0)
                for _ in range(self.iters):
                    logits, g, grad = gradient(forward, u, boundary)
                    self._record(u, u0, logits, tracker, tau)
                    d1 = project_linf_hyperplane(u, grad, -g)
                    g0 = g + (grad * (u0 - u)).flatten(1).sum(1)  # the same hyperplane, seen from u0
                    d2 = project_linf_hyperplane(u0, grad, -g0)
                    a1 = d1.flatten(1).abs().max(1).values
                    a2 = d2.flatten(1).abs().max(1).values
                    alpha = (a1 / (a1 + a2 + 1e-12)).clamp(0, self.alpha_max).view(view)
                    u = ((u + self.eta * d1) * (1 - alpha) + (u0 + self.eta * d2) * alpha).clamp(0, 1)
                    with torch.no_grad():
                        logits = forward(u)
                    adv = self._record(u, u0, logits, tracker, tau) < tau
                    # once adversarial, move back towards the clean input to shrink the norm
                    u = torch.where(adv.view(view), u0 + (u - u0) * self.beta, u)
                runs += 1
        self._bisect(u0, forward, tracker, tau)
        found = self._best_norm <= r * (1 + 1e-6)
        self.info["iterations"] = self.iters * runs
        self.info["found"] = found.tolist()
        self.info["min_norm"] = (self._best_norm * 255).tolist()
        self.info["reason"] = [None if f else self._why_not(n, d, t) for f, n, d, t in
                               zip(found.tolist(), self.info["min_norm"], self._lowest_dice.tolist(),
                                   tau.tolist())]

    def _restart_point(self, u0: torch.Tensor) -> torch.Tensor:
        """A random point at L-inf distance half the smaller of eps and the best norm so far."""
        view = (-1, *[1] * (u0.ndim - 1))
        noise = torch.rand(u0.shape, generator=self.generator, device=u0.device, dtype=u0.dtype) * 2 - 1
        noise = noise / noise.flatten(1).abs().max(1).values.clamp(min=1e-12).view(view)
        radius = self._best_norm.clamp(max=self.threat.radius).view(view)
        return (u0 + 0.5 * radius * noise).clamp(0, 1)

    def _bisect(self, u0, forward, tracker, tau) -> None:
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
                adv = (self._record(u, u0, forward(u), tracker, tau) < tau) & have
            hi = torch.where(adv, mid, hi)
            lo = torch.where(adv, lo, mid)

    def _why_not(self, norm: float, lowest: float, tau: float) -> str:
        if norm != float("inf"):
            return (f"smallest adversarial perturbation found is {norm:.1f}/255, outside the ball "
                    f"({self.threat.eps:g}/255)")
        return (f"no point with Dice < {tau:.3f} reached in {self.info['iterations']} iteration(s) "
                f"(lowest Dice seen {lowest:.3f}, inside or outside the ball)")

    def _record(self, u, u0, logits, tracker, tau):
        norm = (u - u0).flatten(1).abs().max(1).values
        inside = norm <= self.threat.radius * (1 + 1e-6)
        dice = tracker.update(u, logits, valid=inside)
        adv = dice < tau
        self._lowest_dice = torch.minimum(self._lowest_dice, dice)
        smaller = adv & (norm < self._best_norm)
        self._best_norm = torch.where(smaller, norm, self._best_norm)
        self._best_adv = torch.where(smaller.view(-1, *[1] * (u.ndim - 1)), u.detach(), self._best_adv)
        return dice
