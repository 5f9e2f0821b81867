"""Adversarial training steps: Free AT (Shafahi et al. 2019), PGD-AT (Madry et al. 2018), and
Free-style training against worst-case scanner artefacts (`rog.artefacts`).

Both use the benchmark's threat model (`rog.attacks.ThreatModel`) with the benchmark's radius:
eps / 255 of the whole case's per-channel range (`case_lo`, `case_hi`, which `TrainPatches`
hands over with each patch), not the patch's own range (0.77-1.24x of it on the synthetic
task). The box is the case's range widened to the augmented patch's where intensity
augmentation stretched it, so the clean patch is always inside.
Free AT replays each minibatch `replays` times; each replay takes one optimiser step on the
perturbed batch and one signed-gradient step of size eps on a perturbation buffer that is
carried across minibatches. The public code's step, `(eps_abs // 2) * sign(grad)`, rounds to
zero on z-scored data; here the step is the radius itself and is never zero for eps > 0.
PGD-AT's examples come from the benchmark's own `PGD` attack; with TRADES they maximise TRADES's
own inner loss, KL(p_clean || p_adv) (`trades_examples`). A KL is at its minimum at delta = 0,
where its gradient is rounding noise that `sign()` would turn into a full step: TRADES starts
from x + 0.001 N(0, 1) (Zhang et al. 2019, on images in [0, 1]; here on the case's range), and
so does Free AT's buffer when it trains with TRADES. Artefact training (`ArtefactAT`)
replays each minibatch as Free AT does, with an artefact's parameters in place of the
perturbation: a signed-gradient step on them per replay, inside the severity's bound.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rog.artefacts.models import make_artefact
from rog.artefacts.search import apply
from rog.attacks import PGD, ThreatModel
from rog.attacks.base import frozen
from rog.corruptions import foreground_sd
from rog.train.loss import consistency

TRADES_START = 1e-3  # Zhang et al.'s sd of the random start, in units of the case's range


class FreeAT:
    """State of Free adversarial training: the persistent perturbation buffer, started at zero
    or (`random_start`, for TRADES) at TRADES's random start."""

    def __init__(self, eps: float, replays: int = 5, random_start: bool = False):
        self.threat, self.replays, self.random_start = ThreatModel.exactly(eps), replays, random_start
        self.delta: torch.Tensor | None = None
        self.last_ratio = 0.0  # |delta|_inf / radius of the last replay, for the log

    def step(self, x: torch.Tensor, y: torch.Tensor, case_lo: torch.Tensor, case_hi: torch.Tensor,
             train_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scale: float = 1.0,
             seed: int = 0) -> float:
        """Replay the minibatch x `[B, C, ...]`, y `[B, ...]` whose cases span [case_lo, case_hi]
        (`[B, C]` each); `train_step(x_in, y)` runs forward, backward and the optimiser step and
        returns the loss with `x_in` requiring grad. `scale`: the fraction of eps in use (the
        warm-up's, `eps_scale`); `seed` draws a random start where the buffer starts afresh.
        Returns the mean loss."""
        lo, hi, radius = training_box(x, case_lo, case_hi, self.threat)
        radius = radius * scale
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = trades_start(x, lo, hi, seed) - x if self.random_start else torch.zeros_like(x)
        total = 0.0
        for _ in range(self.replays):
            delta = torch.maximum(torch.minimum(self.delta, radius), -radius)
            x_in = torch.maximum(torch.minimum(x + delta, hi), lo).requires_grad_(True)
            total += float(train_step(x_in, y))
            # fp16 training scales the loss (GradScaler): the sign is unchanged, but a step the
            # scaler skips for overflow leaves inf or NaN here, and sign(NaN) would poison the
            # buffer for the rest of the run; such elements take no step
            grad = torch.nan_to_num(x_in.grad.detach(), nan=0.0)
            self.delta = torch.maximum(torch.minimum(delta + radius * grad.sign(), radius), -radius)
            self.last_ratio = float((self.delta.abs() / radius.clamp(min=1e-12)).flatten(1).max(1).values.mean())
        return total / self.replays


class ArtefactAT:
    """Free-style training against worst-case artefacts: each minibatch gets one artefact of
    `kinds` at a severity drawn from 1..`max_severity` (both seeded by the batch, so a resumed
    run draws the same), parameters starting from a random draw; each of `replays` replays
    takes one optimiser step on the batch under the artefact and one step of `step` (in the
    parameters' [-1, 1] units) along the sign of their gradient, which the same backward pass
    gives. Parameters are not carried across minibatches: another batch may get another kind."""

    def __init__(self, kinds: list[str], max_severity: int, replays: int, spacing, step: float = 0.5):
        self.kinds, self.max_severity, self.replays = list(kinds), max_severity, replays
        self.spacing, self.step_size = [float(v) for v in spacing], step
        self.last = ""  # the last batch's artefact and severity ("bias s3"), for inspection

    def step(self, x: torch.Tensor, y: torch.Tensor, case_lo: torch.Tensor, case_hi: torch.Tensor,
             train_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int) -> float:
        """Replay the minibatch x `[B, C, ...]`, y `[B, ...]` whose cases span [case_lo, case_hi]
        (`[B, C]` each); `train_step(x_in, y)` runs forward, backward and the optimiser step and
        returns the loss. `seed` draws the artefact. Returns the mean loss."""
        g = torch.Generator().manual_seed(seed)
        kind = self.kinds[int(torch.randint(len(self.kinds), (1,), generator=g))]
        severity = int(torch.randint(1, self.max_severity + 1, (1,), generator=g))
        lo, hi = training_range(x, case_lo, case_hi)
        unit = torch.stack([foreground_sd(xi, yi) for xi, yi in zip(x, y)]) / (hi - lo).flatten(1).clamp(min=1e-12)
        art = make_artefact(kind, severity, self.spacing, unit)
        t = art.draw(x.shape[0], tuple(x.shape[1:]), g).to(x)
        self.last = f"{kind} s{severity}"
        total = 0.0
        for _ in range(self.replays):
            t = t.detach().requires_grad_(True)
            total += float(train_step(apply(art, x, t, lo, hi), y))
            grad = torch.nan_to_num(t.grad, nan=0.0) if t.grad is not None else torch.zeros_like(t)  # as Free AT's
            t = (t + self.step_size * grad.sign()).clamp(-1, 1)
        return total / self.replays


def eps_scale(update: int, total: int, warmup: float) -> float:
    """The fraction of eps in use at update `update` (0-based) of `total`: it rises linearly
    over the first `warmup` fraction of the run, from 1 / (warmup * total) at the first update
    (never 0: the first batches are attacked a little) to 1; 1 throughout when `warmup` is 0.
    A function of the update's index only, so a resumed run continues the same schedule."""
    if warmup <= 0:
        return 1.0
    return min(1.0, (update + 1) / max(warmup * total, 1.0))


def training_box(x: torch.Tensor, case_lo: torch.Tensor, case_hi: torch.Tensor, threat: ThreatModel):
    """(lo, hi, radius), each `[B, C, 1, 1, 1]`, for patches x `[B, C, ...]` of cases spanning
    [case_lo, case_hi] (`[B, C]`): the radius is the threat's on the case's range; the box is
    the case's range widened to the patch's."""
    shape = (*x.shape[:2], *([1] * (x.ndim - 2)))
    lo, hi = training_range(x, case_lo, case_hi)
    return lo, hi, threat.radius_of(case_lo.to(x).view(shape), case_hi.to(x).view(shape))


def training_range(x: torch.Tensor, case_lo: torch.Tensor, case_hi: torch.Tensor):
    """(lo, hi), each `[B, C, 1, 1, 1]`: the range of the cases (`[B, C]`) of the patches x
    `[B, C, ...]`, widened to the patches' own where augmentation stretched them."""
    shape = (*x.shape[:2], *([1] * (x.ndim - 2)))
    lo, hi = ThreatModel.channel_range(x)
    return torch.minimum(lo, case_lo.to(x).view(shape)), torch.maximum(hi, case_hi.to(x).view(shape))


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, case_lo: torch.Tensor, case_hi: torch.Tensor,
                 eps: float, steps: int, seed: int) -> torch.Tensor:
    """PGD-AT inputs `[B, C, ...]` for a batch x `[B, C, ...]`, y `[B, ...]` of cases spanning
    [case_lo, case_hi] (`[B, C]`): the benchmark's PGD (CE, `steps` steps of 2.5 eps / steps
    from a random start seeded by `seed`, the lowest-Dice iterate kept) with the case's radius
    inside `training_box`. The weights are frozen meanwhile; they receive their gradients in the
    training step that follows."""
    lo, hi, radius = training_box(x, case_lo, case_hi, ThreatModel.exactly(eps))
    # the attack measures eps on the box it is given: rescale so its radius is the case's
    per_channel = eps * radius / (ThreatModel.exactly(eps).radius_of(lo, hi)).clamp(min=1e-12)
    return PGD(model, ThreatModel(per_channel), iters=steps, seed=seed)(x, y, lo, hi)


def trades_start(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, seed: int) -> torch.Tensor:
    """TRADES's random start `[B, C, ...]` for x `[B, C, ...]` in the box [lo, hi]
    (`[B, C, 1, 1, 1]`): x + 0.001 (hi - lo) N(0, 1), drawn from `seed`, inside the box."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    return torch.maximum(torch.minimum(x + TRADES_START * (hi - lo) * noise, hi), lo)


def trades_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, case_lo: torch.Tensor,
                    case_hi: torch.Tensor, eps: float, steps: int, seed: int) -> torch.Tensor:
    """TRADES's inputs `[B, C, ...]` for a batch x `[B, C, ...]`, y `[B, ...]` of cases spanning
    [case_lo, case_hi] (`[B, C]`): `steps` signed-gradient steps of 2.5 eps / steps (as
    `pgd_examples`) on KL(p_clean || p_adv) over the scored voxels, from `trades_start`,
    projected on the case's radius and the `training_box`; the last iterate, as Zhang et al.
    The weights are frozen meanwhile."""
    lo, hi, radius = training_box(x, case_lo, case_hi, ThreatModel.exactly(eps))
    step, labels = 2.5 * radius / max(steps, 1), y.unsqueeze(1)
    with frozen(model):
        with torch.no_grad():
            clean = model(x)
        x_adv = trades_start(x, lo, hi, seed)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                grad, = torch.autograd.grad(consistency(clean, model(x_adv), labels), x_adv)
            x_adv = x + torch.maximum(torch.minimum(x_adv.detach() + step * grad.sign() - x, radius), -radius)
            x_adv = torch.maximum(torch.minimum(x_adv, hi), lo)
    return x_adv.detach()
