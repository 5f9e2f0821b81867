"""APGD (Croce & Hein 2020), the AutoAttack algorithm, with voxel-wise losses.

Step size 2 eps; momentum 0.75 (none on the first step); checkpoints after 22% of the
iterations, then periods shorter by 3% down to 6%; at a checkpoint the step is halved and
the iterate reset to the best-loss point when fewer than 75% of the period's steps raised the
loss, or when the step was not halved at the previous checkpoint and the best loss has not
improved since. Restarts from new random points. The Dice-lowest iterate is returned.

Progressive radius reduction (`prr`, SEA's, Croce, Singh and Hein 2024): each run is three
runs of 30 %, 30 % and 40 % of the iterations at 2, 1.5 and 1 times eps, each starting from the
previous one's lowest-Dice point projected into its own ball; only points inside the true ball
can be returned.
"""
from __future__ import annotations

import torch

from rog.attacks import losses
from rog.attacks.base import Attack, DiceTracker, gradient
from rog.attacks.threat import ThreatModel

# loss name -> (voxel loss, attack name); "dlr-targeted" runs per target (`perturb`)
LOSSES = {"ce": (losses.ce, "apgd-ce"), "dlr": (losses.dlr, "apgd-dlr"), "dice": (losses.soft_dice, "apgd-dice"),
          "jsd": (losses.jsd, "apgd-jsd"), "ce-right": (losses.ce_right, "apgd-mce"),
          "ce-right-bal": (losses.ce_right_balanced, "apgd-mbce"), "sph-right": (losses.spherical_right, "apgd-msph")}
PRR = ((2.0, 0.3), (1.5, 0.3), (1.0, 0.4))  # (radius factor, share of the iterations)


class APGD(Attack):
    """APGD (Croce and Hein 2020) on a segmentation loss.

    Args:
        model: any module mapping `[B, C, D, H, W]` to logits `[B, K, D, H, W]`.
        threat: the `ThreatModel` (eps on the /255 scale of each channel's range).
        iters: iterations per run.
        loss: "ce", "dlr" or "dlr-targeted" (one run per target rank, a voxel's target being
            its `rank`-th most likely class on the clean input), "dice" (`losses.soft_dice`), or
            SEA's "jsd", "ce-right", "ce-right-bal", "sph-right" (`LOSSES`). On binary tasks both
            DLR losses become `losses.binary_margin_ratio` (DLR needs a third logit).
        restarts: runs from random starts after the first.
        starts: points `[B, ...]` in the box where the first runs start instead of random ones
            (`rog.artefacts` starts from the worst random draw of an artefact).
        prr: progressive radius reduction (the module's docstring).

    Shapes: as `Attack.__call__`."""

    name = "apgd"
    RHO = 0.75

    def __init__(self, model, threat, iters: int = 100, loss: str = "ce", restarts: int = 1,
                 target_ranks: int = 9, num_classes=None, seed: int = 0, starts: list | None = None,
                 prr: bool = False):
        super().__init__(model, threat, num_classes, seed)
        if loss not in LOSSES and loss != "dlr-targeted":
            raise ValueError(f"unknown APGD loss {loss!r}")
        self.iters, self.loss, self.restarts, self.target_ranks, self.prr = iters, loss, restarts, target_ranks, prr
        self._starts = list(starts or [])  # a tensor per run, not a hyper-parameter of the results
        self.name = "apgd-t" if loss == "dlr-targeted" else LOSSES[loss][1]

    def perturb(self, u0, y, forward, tracker, logits0):
        runs = 0
        self.info["checkpoints"] = []
        self._best_loss = torch.full((u0.shape[0],), float("-inf"), device=u0.device)
        if self.loss == "dlr-targeted":
            order = logits0.argsort(dim=1)  # ascending
            ranks = range(2, min(self.target_ranks, logits0.shape[1] - 1) + 2)
            for rank in ranks:
                target = order[:, -rank]
                for _ in range(self.restarts):
                    self._run(u0, y, forward, tracker, logits0, lambda z: losses.dlr_targeted(z, y, target),
                              self._starts[runs] if runs < len(self._starts) else None)
                    runs += 1
        else:
            loss_fn = self.scored_loss(LOSSES[self.loss][0])
            for _ in range(self.restarts):
                self._run(u0, y, forward, tracker, logits0, lambda z: loss_fn(z, y),
                          self._starts[runs] if runs < len(self._starts) else None)
                runs += 1
        self.info["iterations"] = self.iters * runs
        # the highest loss any run reached, per instance: what AutoAttack's APGD keeps as loss_best
        self.info["best_loss"] = self._best_loss.tolist()

    def _run(self, u0, y, forward, tracker, logits0, loss_fn, start: torch.Tensor | None):
        """One run: a single APGD run, or with `prr` its three stages."""
        if not self.prr:
            self._single_run(u0, y, forward, tracker, loss_fn, start, self.iters)
            return
        final = self.threat
        counts = [int(share * self.iters) for _, share in PRR[:-1]]
        counts.append(self.iters - sum(counts))
        try:
            for (factor, _), n in zip(PRR, counts):
                self.threat = ThreatModel.exactly(final.eps * factor, final.norm)
                stage = DiceTracker(u0, logits0, y, tracker.k)  # this stage's lowest-Dice point, its ball's
                both = _Both(stage, tracker, lambda u: (final.project(u, u0) - u).flatten(1).abs().amax(1) <= 1e-7)
                if n > 0:
                    self._single_run(u0, y, forward, both, loss_fn, start, n)
                    start = stage.best_u
        finally:
            self.threat = final

    def _single_run(self, u0, y, forward, tracker, loss_fn, start: torch.Tensor | None, n: int):
        b = u0.shape[0]
        view = (-1, *[1] * (u0.ndim - 1))
        period = max(int(0.22 * n), 1)
        period_min = max(int(0.06 * n), 1)
        decrease = max(int(0.03 * n), 1)

        u = self.random_start(u0) if start is None else self.threat.project(start, u0)
        logits, loss, grad = gradient(forward, u, loss_fn)
        tracker.update(u, logits)
        step = (2.0 * torch.as_tensor(self.threat.peak, device=u0.device, dtype=u0.dtype)).expand(b).clone()
        u_best, grad_best, loss_best = u, grad, loss.clone()
        loss_steps = torch.zeros(n, b, device=u0.device, dtype=loss.dtype)
        loss_best_last_check = loss_best.clone()
        # true at the start, as in AutoAttack: the first checkpoint halves the step only on
        # oscillation, not for lack of progress
        reduced_last_check = torch.ones(b, dtype=torch.bool, device=u0.device)
        u_old = u.clone()
        counter = 0
        for i in range(n):
            momentum = 0.75 if i > 0 else 1.0
            diff = u - u_old
            u_old = u
            z = self.threat.project(self.ascent(u, grad, step), u0)
            u = self.threat.project(u + (z - u) * momentum + diff * (1 - momentum), u0)

            logits, loss, grad = gradient(forward, u, loss_fn)
            tracker.update(u, logits)
            loss_steps[i] = loss
            improved = loss > loss_best
            u_best = torch.where(improved.view(view), u, u_best)  # no host sync (see DiceTracker)
            grad_best = torch.where(improved.view(view), grad, grad_best)
            loss_best = torch.where(improved, loss, loss_best)

            counter += 1
            if counter == period:
                self.info["checkpoints"].append(i + 1)
                oscillating = self._oscillation(loss_steps, i, period)
                no_progress = ~reduced_last_check & (loss_best_last_check >= loss_best)
                reduce = oscillating | no_progress
                reduced_last_check = reduce
                loss_best_last_check = loss_best.clone()
                step = torch.where(reduce, step / 2.0, step)
                u = torch.where(reduce.view(view), u_best, u)
                grad = torch.where(reduce.view(view), grad_best, grad)
                counter = 0
                period = max(period - decrease, period_min)
        self._best_loss = torch.maximum(self._best_loss, loss_best.to(self._best_loss))

    def _oscillation(self, loss_steps: torch.Tensor, j: int, k: int) -> torch.Tensor:
        """True where at most RHO * k of the last k steps increased the loss (AutoAttack's
        check; indices before the first step wrap to the zero-initialised end, as there)."""
        n = loss_steps.shape[0]
        steps = torch.arange(j - k + 1, j + 1, device=loss_steps.device)
        rises = (loss_steps[steps % n] > loss_steps[(steps - 1) % n]).sum(0)
        return rises <= k * self.RHO


class _Both:
    """Feeds a PRR stage's points to its own tracker and, where `inside` the true ball, to
    the attack's."""

    def __init__(self, stage: DiceTracker, attack: DiceTracker, inside):
        self.stage, self.attack, self.inside = stage, attack, inside

    def update(self, u: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        self.attack.update(u, logits, self.inside(u))
        return self.stage.update(u, logits)


def apgd_checkpoints(n: int) -> list[int]:
    """Iterations at which APGD checks its step size, as fractions p_j of n (for reference)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return [int(round(v * n)) for v in p[1:] if v <= 1]
