"""The worst artefact of a given size: random draws and APGD on the artefact's parameters.

An artefact of `rog.artefacts.models` at severity s is a map of parameters t in [-1, 1]^P.
The search runs the benchmark's APGD (`rog.attacks.APGD`, CE loss, its step-size schedule and
restarts) on those parameters, the box [-1, 1]^P taking the place of the eps-ball: in APGD's
coordinates v = (t + 1) / 2 the box is [0, 1]^P, the ball of radius 1/2 around the identity
v = 1/2 covers it, and APGD's random start is a uniform draw in it. The random baseline draws
t as `rog.corruptions` does at that severity; the search's first run starts from the worst
draw, its other restarts from uniform draws in the box (few parameters that move every voxel
at once make a rugged loss, and a soft-Dice ascent from one random point can miss the corner
a draw sits on: gamma's and blur's). APGD keeps the lowest-Dice point it evaluated, the
identity included, so the search never reports a Dice above the clean one nor above the worst
draw; whether fresh draws beat it is the benchmark's validity check.

For motion, whose worst cases sit at corners of its box that APGD's steps do not reach, and
wherever no gradient reaches the parameters (a model whose inference is not differentiable: a
TorchScript or external pipeline that argmaxes or thresholds inside), the search is
derivative-free: Square's random search (Andriushchenko et al. 2020) carried to the parameter
box. Each query changes a random share p of the coordinates and keeps the change where it
lowers the Dice (ties: where it raises the soft-Dice loss). In the first half of the queries
the chosen coordinates jump to a random corner of the box (+-1, as Square's windows to +-eps),
with p = 1/2; in the second half they move by +-2p, p halving from 1/4 at three quarters
(Square's own schedule halves three times in its first 2 %, made for thousands of queries, not
the tens that match APGD's cost here). At APGD's cost: three forward passes for each of APGD's
forward-backward ones. "auto" takes each artefact's own search (`Artefact.search`: random for
motion, APGD for the others, where it finds worse artefacts), and the random search wherever
the loss's gradient at the worst draw is zero or not finite (the comparison:
docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from rog.artefacts.models import Artefact
from rog.attacks.apgd import APGD
from rog.attacks.base import frozen, label_map
from rog.attacks.losses import soft_dice
from rog.attacks.threat import ThreatModel
from rog.evaluate.metrics import dice_batch

# the L-inf ball of APGD's coordinates that covers the box [0, 1]^P from its centre
WHOLE_BOX = ThreatModel(127.5)
SEARCHES = ("apgd", "random")
RANDOM_P_INIT = 0.5  # the share of coordinates the random search's first half of queries changes
FORWARDS_PER_STEP = 3  # a backward pass costs about two forward ones


@dataclass
class Outcome:
    """What one search on one case found. `t`: the worst parameters `[P]`; `by`: "search",
    "random" or "none" (neither lowered Dice below the clean case's); `method`: the search's,
    "apgd" or "random" (`SEARCHES`); `iterations`: its steps (APGD) or queries (random)."""

    dice: float  # the worst case: min over the search and the draws
    random_dice: float  # mean over the draws (what `rog corrupt` estimates)
    random_worst: float  # the lowest draw
    search_dice: float
    t: torch.Tensor
    by: str
    draws: int
    iterations: int
    in_bound: bool  # the search's parameters within [-1, 1]
    method: str = "apgd"


def apply(artefact: Artefact, x: torch.Tensor, t: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The corrupted model input: x `[B, C, X, Y, Z]` in model units with the box lo, hi
    `[B, C, 1, 1, 1]`, t `[B, P]` -> like x. The artefact acts on the range-normalised
    intensities, which are mapped back (not clipped)."""
    span = (hi - lo).clamp(min=1e-12)
    return lo + artefact((x - lo) / span, t) * span


def worst_artefact(model: nn.Module, artefact: Artefact, x: torch.Tensor, y: torch.Tensor, lo: torch.Tensor,
                   hi: torch.Tensor, num_classes: int, draws: int = 10, iters: int = 10, restarts: int = 1,
                   seed: int = 0, loss: str = "dice", method: str = "auto") -> Outcome:
    """Search one case for the artefact that lowers its Dice most.

    Args:
        model: `[1, C, X, Y, Z]` -> logits `[1, K, X, Y, Z]` (a whole-case model).
        artefact: the artefact at the severity searched.
        x: the case `[1, C, X, Y, Z]`.
        y: its labels `[1, X, Y, Z]` (or `[1, 1, ...]`).
        lo: the case's channel minimum `[1, C, 1, 1, 1]`.
        hi: its channel maximum, the same shape.
        draws: random draws (one where the artefact draws one value, gamma and blur).
        iters: APGD's iterations per run (0: draws only).
        restarts: APGD's runs (the first from the worst draw).
        loss: APGD's loss ("dice", soft Dice, by default; "ce").
        method: "apgd", "random" (the derivative-free search, with APGD's cost: `random_search`)
            or "auto" (the artefact's own, `Artefact.search`; random where `usable_gradient`
            says no gradient reaches the parameters).
        seed: seeds the draws and the search's random starts.

    Returns:
        The `Outcome`.
    """
    y = label_map(y, x)
    shape = tuple(x.shape[1:])
    g = torch.Generator().manual_seed(seed)
    samples = artefact.draw(1 if artefact.deterministic else draws, shape, g).to(x)
    with frozen(model), torch.no_grad():
        clean = dice_batch(model(x).argmax(1), y, num_classes)[0]
        drawn = torch.stack([dice_batch(model(apply(artefact, x, t[None], lo, hi)).argmax(1), y, num_classes)[0]
                             for t in samples])
    best_draw = int(drawn.argmin())
    search_dice, t_search, done = float(clean), torch.zeros(samples.shape[1]).to(x), 0
    if method == "auto":
        method = "random" if artefact.search == "random" or not usable_gradient(
            model, artefact, x, y, lo, hi, samples[best_draw]) else "apgd"
    if iters > 0 and method == "random":
        starts = [samples[best_draw]] + [torch.rand(samples.shape[1], generator=g).to(x) * 2 - 1
                                         for _ in range(restarts - 1)]
        with frozen(model), torch.no_grad():
            runs = [random_search(lambda t: model(apply(artefact, x, t[None], lo, hi)), t0, y, num_classes,
                                  FORWARDS_PER_STEP * (iters + 1), g) for t0 in starts]
        t_search, search_dice, _ = min(runs, key=lambda r: r[1])
        done = sum(r[2] for r in runs)
    elif iters > 0:
        apgd = APGD(model, WHOLE_BOX, iters=iters, loss=loss, restarts=restarts, num_classes=num_classes, seed=seed,
                    starts=[(samples[best_draw:best_draw + 1] + 1) / 2])
        v = apgd.search(torch.full((1, samples.shape[1]), 0.5).to(x), y,
                        lambda v: model(apply(artefact, x, 2 * v - 1, lo, hi)))
        t_search, search_dice, done = (2 * v - 1)[0], apgd.info["dice"][0], apgd.info["iterations"]
    random_worst = float(drawn[best_draw])
    if min(search_dice, random_worst) >= float(clean):
        by, t = "none", torch.zeros_like(t_search)
    elif search_dice < random_worst:
        by, t = "search", t_search
    else:  # the search kept its start (or ran no iteration)
        by, t = "random", samples[best_draw]
    return Outcome(min(search_dice, random_worst), float(drawn.mean()), random_worst, search_dice, t.detach(), by,
                   len(samples), done, bool(t_search.abs().max() <= 1 + 1e-6), method)


def usable_gradient(model: nn.Module, artefact: Artefact, x: torch.Tensor, y: torch.Tensor, lo: torch.Tensor,
                    hi: torch.Tensor, t: torch.Tensor) -> bool:
    """Whether the soft-Dice loss has a finite, non-zero gradient in the parameters t `[P]` of
    the case x `[1, C, X, Y, Z]` (labels y `[1, X, Y, Z]`, box lo, hi `[1, C, 1, 1, 1]`): one
    forward and backward pass."""
    t = t[None].detach().clone().requires_grad_(True)
    with frozen(model), torch.enable_grad():
        loss = soft_dice(model(apply(artefact, x, t, lo, hi)), y).sum()
        if not loss.requires_grad:
            return False
        (grad,) = torch.autograd.grad(loss, t, allow_unused=True)
    return grad is not None and bool(torch.isfinite(grad).all()) and bool(grad.abs().sum() > 0)


def random_search(model: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, y: torch.Tensor,
                  num_classes: int, queries: int, g: torch.Generator) -> tuple[torch.Tensor, float, int]:
    """Square's random search in the parameter box [-1, 1]^P (the module's docstring).

    Args:
        model: parameters t `[P]` -> logits `[1, K, X, Y, Z]` of the corrupted case.
        start: the first t `[P]`.
        y: the labels `[1, X, Y, Z]`.
        num_classes: K (or `Regions`).
        queries: model evaluations after the start's.
        g: draws the coordinates and signs (CPU).

    Returns:
        (the lowest-Dice t `[P]`, its Dice, the queries made).
    """
    def score(t):
        logits = model(t)
        return float(dice_batch(logits.argmax(1), y, num_classes)[0]), -float(soft_dice(logits, y)[0])
    best_t, best = start.clone(), score(start)
    size = start.numel()
    for q in range(queries):
        corner = 2 * q < queries
        p = RANDOM_P_INIT if corner else RANDOM_P_INIT / 2 ** (4 * q // queries - 1)
        moved = torch.randperm(size, generator=g)[:max(1, round(p * size))]
        signs = (torch.randint(0, 2, (len(moved),), generator=g) * 2 - 1).to(start)
        t = best_t.clone()
        t[moved] = signs if corner else (t[moved] + 2 * p * signs).clamp(-1, 1)
        value = score(t)
        if value < best:  # lower Dice, or the same Dice and a higher soft-Dice loss
            best_t, best = t, value
    return best_t, best[0], queries
