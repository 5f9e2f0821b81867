"""What every attack shares: range normalisation, frozen weights, seeding, and keeping the
iterate with the lowest Dice.

An attack is constructed with its hyper-parameters and called as `x_adv = attack(x, y)` on
model inputs `x: [B, C, D, H, W]` and labels `y: [B, D, H, W]`. It returns the lowest-Dice
point it evaluated (the clean input included, so an attack that finds nothing returns x),
keeps its iterates in the ball and the box (the returned point is not clipped afterwards: the
benchmark checks it), and is deterministic under its seed. `attack.info` then
holds per-instance statistics of the call.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from rog.attacks import losses
from rog.attacks.threat import ThreatModel
from rog.evaluate.metrics import dice_batch

Forward = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def frozen(model: nn.Module):
    """Eval mode and no weight gradients for the duration; restores both afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(training)


class DiceTracker:
    """Keeps, per instance, the evaluated point with the lowest mean foreground Dice."""

    def __init__(self, u0: torch.Tensor, logits0: torch.Tensor, y: torch.Tensor, num_classes: int):
        self.y, self.k = y, num_classes
        self.best_u = u0.detach().clone()
        self.best_dice = dice_batch(logits0.argmax(1), y, num_classes)
        self.clean_dice = self.best_dice.clone()

    def update(self, u: torch.Tensor, logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Record the points `u` (with their `logits`); `valid` masks out points that may not
        be kept (outside the threat model). Returns their Dice `[B]`."""
        d = dice_batch(logits.detach().argmax(1), self.y, self.k)
        better = d < self.best_dice if valid is None else (d < self.best_dice) & valid
        # torch.where rather than boolean indexing: no host-device synchronisation, which on a
        # GPU would stall the launch of the next forward pass
        self.best_u = torch.where(better.view(-1, *[1] * (u.ndim - 1)), u.detach(), self.best_u)
        self.best_dice = torch.where(better, d, self.best_dice)
        return d


def label_map(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Labels `[B, ...]`, or MONAI's `[B, 1, ...]`, for inputs x `[B, C, ...]`, as `[B, ...]`
    int64; any other shape is a ValueError naming both."""
    spatial = (x.shape[0], *x.shape[2:])
    if x.ndim >= 3 and y.shape == (x.shape[0], 1, *x.shape[2:]):
        y = y[:, 0]
    if x.ndim < 3 or y.shape != spatial:
        raise ValueError(f"expected x [B, C, ...] and labels y [B, ...] or [B, 1, ...] on x's grid, got x "
                         f"{tuple(x.shape)} and y {tuple(y.shape)}")
    return y.long()


class Attack:
    """Base class. Subclasses implement `perturb(u0, y, forward, tracker)` in range-normalised
    coordinates (box [0, 1], L-inf radius eps/255) and skip themselves (`skip_reason`) on tasks
    with fewer than `min_classes` classes, under a threat model not in `norms`, or (unless
    `per_channel`) under a radius per channel."""

    name = "attack"
    min_classes = 2
    norms = ("linf", "l2")  # threat models the attack is implemented for
    per_channel = True  # whether it takes a radius per channel (`ThreatModel.per_channel`)

    def __init__(self, model: nn.Module, threat: ThreatModel, num_classes: int | None = None, seed: int = 0):
        self.model, self.threat, self.num_classes, self.seed = model, threat, num_classes, seed
        self.info: dict = {}

    def config(self, threat: bool = True) -> dict:
        """Hyper-parameters, for result files (with the threat model unless `threat` is False)."""
        skip = {"model", "threat", "info", "num_classes", "generator"}
        out = {"attack": self.name, **{k: v for k, v in vars(self).items() if k not in skip and k[0] != "_"}}
        return {**out, "threat": self.threat.to_dict()} if threat else out

    def counters(self) -> dict:
        """The last call's counters of its first instance, as a result record holds them:
        iterations or queries (and no-op queries), and (FAB-T) whether a point was found within
        eps and, where not, why. None where the attack keeps no such counter."""
        first = lambda key: self.info.get(key, [None])[0]  # noqa: E731
        return dict(iterations=self.info.get("iterations"), queries=self.info.get("queries"),
                    noop_queries=self.info.get("noop_queries"), found=first("found"), reason=first("reason"))

    def skip_reason(self, num_classes: int) -> str | None:
        """Why this attack cannot run on a task of `num_classes` under its threat model, or None."""
        if num_classes < self.min_classes:
            return f"{self.name} needs at least {self.min_classes} classes, the task has {num_classes}"
        if self.threat.norm not in self.norms:
            return f"{self.name} is implemented for the {'/'.join(self.norms)} threat model, not {self.threat.norm}"
        if self.threat.per_channel and not self.per_channel:
            return f"{self.name} is implemented for one radius on every channel, not a radius per channel"
        return None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lo: torch.Tensor | None = None,
                 hi: torch.Tensor | None = None) -> torch.Tensor:
        """Attack a batch.

        Args:
            x: inputs `[B, C, D, H, W]` in the model's units.
            y: labels `[B, D, H, W]` or MONAI's `[B, 1, D, H, W]`.
            lo: the box's lower end per instance and channel, `[B, C, 1, 1, 1]` (default:
                each instance's channel minimum; the benchmark passes the whole case's).
            hi: its upper end, the same way.

        Returns:
            The lowest-Dice point evaluated (the clean input included), like `x`: x plus the
            attack's change, never clipped afterwards. `self.info` holds per-instance "dice",
            "clean_dice" and the attack's counters.

        Raises:
            ValueError: shapes that do not fit, or a task the attack cannot run on
                (`skip_reason`).
        """
        y = label_map(y, x)
        if lo is None or hi is None:
            lo, hi = ThreatModel.channel_range(x)
        scale = (hi - lo).clamp(min=1e-12)
        u0 = ((x.detach() - lo) / scale).clamp(0, 1)

        self._lo, self._scale = lo, scale
        best = self.search(u0, y, lambda u: self.model(self.input_of(u)))
        # returned as found, never clipped here: the attacks project their own iterates, and
        # the benchmark's ball/box/finite check must see any that did not
        # (as a change of x: exact where x is, so the ball holds to the last bit)
        return x.detach() + (best - u0) * scale

    def search(self, u0: torch.Tensor, y: torch.Tensor, forward: Forward) -> torch.Tensor:
        """Run the attack from the points `u0` `[B, ...]` of the box [0, 1] (any shape after the
        batch axis: `rog.artefacts` searches artefact parameters this way), `forward` mapping
        such points to logits `[B, K, D, H, W]` for labels y `[B, D, H, W]`.

        Returns:
            The lowest-Dice point evaluated, like u0 (u0 itself where nothing lowered Dice);
            `self.info` as `__call__` describes it.
        """
        with frozen(self.model):
            with torch.no_grad():
                logits0 = forward(u0)
            k = self.num_classes or logits0.shape[1]
            reason = self.skip_reason(k)
            if reason:
                raise ValueError(reason)
            tracker = DiceTracker(u0, logits0, y, k)
            self.generator = torch.Generator(device=u0.device).manual_seed(self.seed)
            self.info = {"clean_dice": tracker.clean_dice.tolist()}
            self.perturb(u0, y, forward, tracker, logits0)
            self.info["dice"] = tracker.best_dice.tolist()
        return tracker.best_u

    def perturb(self, u0, y, forward: Forward, tracker: DiceTracker, logits0: torch.Tensor) -> None:
        raise NotImplementedError

    def input_of(self, u: torch.Tensor) -> torch.Tensor:
        """Model input `[N, C, ...]` of range-normalised points `u`; N may stack several
        candidates per instance, instance-major (Square batches its queries)."""
        reps = u.shape[0] // self._lo.shape[0]
        return self._lo.repeat_interleave(reps, 0) + u * self._scale.repeat_interleave(reps, 0)

    def scored_loss(self, loss):
        """An untargeted voxel loss (`rog.attacks.losses`) as this attack takes it: on the
        regions of a model scored on regions (`losses.on_regions`), else as it is. Targeted
        losses stay on labels: their targets are labels."""
        members = getattr(self.num_classes, "members", None)
        return losses.on_regions(loss, members) if members else loss

    # helpers shared by the gradient attacks
    def random_start(self, u0: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(u0.shape, generator=self.generator, device=u0.device, dtype=u0.dtype) * 2 - 1
        if self.threat.norm == "l2":
            noise = noise / noise.flatten(1).norm(dim=1).view(-1, *[1] * (u0.ndim - 1)) * u0[0].numel() ** 0.5
        return self.threat.project(u0 + self.threat.radius_like(u0) * noise, u0)

    def ascent(self, u: torch.Tensor, grad: torch.Tensor, step) -> torch.Tensor:
        """One step of size `step` (scalar or `[B]`, in units of the threat's `peak` radius)
        along the steepest-ascent direction of the threat's norm."""
        step = torch.as_tensor(step, dtype=u.dtype, device=u.device).view(-1, *[1] * (u.ndim - 1))
        if self.threat.norm == "linf":
            if self.threat.per_channel:  # each channel steps in proportion to its own radius
                return u + step * self.threat.shape.to(u) * grad.sign()
            return u + step * grad.sign()
        n = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (u.ndim - 1))
        return u + step * grad / n * u[0].numel() ** 0.5


def gradient(forward: Forward, u: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, per-instance loss, d loss / d u) with one forward and one backward pass. A
    model through which no gradient reaches the input gets a zero gradient: the attack then
    finds nothing, and the benchmark's gradient check says why."""
    u = u.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(u)
        loss = loss_fn(logits)
        grad = torch.autograd.grad(loss.sum(), u, allow_unused=True)[0] if loss.requires_grad else None
    return logits.detach(), loss.detach(), torch.zeros_like(u) if grad is None else grad.detach()
