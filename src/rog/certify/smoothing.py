"""Randomized smoothing for segmentation (SegCertify, Fischer et al. 2021), on whole volumes.

The smoothed model g labels a voxel with the class the base model f gives it most often under
Gaussian noise on the scan: sd `sigma` on the range-normalised scale the L2 threat uses (each
channel's values divided by its range), so the noise in a channel's units is sigma times its
range. Where the class's probability under the noise is at least p, g's label of that voxel
cannot change under any perturbation of L2 norm below sigma * Phi^-1(p) on that scale (Cohen
et al. 2019, per voxel).

The estimate follows SegCertify: `n0` noisy copies choose each voxel's class, `n` more count
how often f gives it; at radius r a voxel is certified when the binomial test rejects "its
class's probability is at most Phi(r / sigma)" after Holm's correction over the scored voxels
(Bonferroni as an option), so that every certified voxel of a case holds at once with
probability at least 1 - alpha; the others abstain. The certified Dice lower bound at r then
counts each abstained voxel as wrong in the way that lowers each class's Dice most.

What it guarantees: the smoothed model's labels, not the base model's; with probability
1 - alpha over the noise drawn, separately at each radius.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from rog.attacks.threat import ThreatModel
from rog.evaluate.metrics import scored_sets, within


@dataclass(frozen=True)
class Smoothing:
    """The smoothed model's own prediction (`rog predict --smooth`): `samples` noisy copies of
    sd `sigma` (range-normalised scale, as `rog certify`), drawn from `seed`."""

    sigma: float
    samples: int = 100
    seed: int = 0

    def votes(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, num_classes: int,
              batch: int = 1) -> torch.Tensor:
        """The share of copies voting each class `[K, ...]` (float32) for the case `x
        [1, C, ...]`, its box each channel's min and max; `model` as `vote_counts` takes it."""
        g = torch.Generator(device=x.device).manual_seed(self.seed)
        counts = vote_counts(model, x, *ThreatModel.channel_range(x), num_classes, self.sigma, self.samples, batch, g)
        return counts.float() / self.samples


def vote_counts(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, lo: torch.Tensor,
                hi: torch.Tensor, num_classes: int, sigma: float, samples: int, batch: int,
                generator: torch.Generator) -> torch.Tensor:
    """How often `model` gives each class to each voxel under the noise.

    Args:
        model: whole case `[B, C, ...]` -> logits `[B, K, ...]`.
        x: the case `[1, C, ...]` in the model's units.
        lo: each channel's lower end `[1, C, 1, ...]`.
        hi: its upper end, the same way.
        num_classes: K.
        sigma: the noise's sd on the range-normalised scale.
        samples: noisy copies.
        batch: copies per forward pass.
        generator: draws the noise (on x's device).

    Returns:
        Counts `[K, ...]` (int64), summing to `samples` at every voxel.
    """
    scale = sigma * (hi - lo)
    counts = torch.zeros((num_classes, *x.shape[2:]), dtype=torch.long, device=x.device)
    with torch.no_grad():
        for start in range(0, samples, batch):
            b = min(batch, samples - start)
            noise = torch.randn((b, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
            labels = model(x + noise * scale).argmax(1)
            counts += torch.nn.functional.one_hot(labels, num_classes).sum(0).movedim(-1, 0)
    return counts


def binomial_pvalues(hits: np.ndarray, n: int, p: float) -> np.ndarray:
    """P(Bin(n, p) >= hits) per entry: the one-sided p-value of "the probability is at most p"."""
    return stats.binom.sf(np.asarray(hits) - 1, n, p)


def holm(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down rejections at family-wise level alpha: the i-th smallest p-value is
    rejected when it and every smaller one satisfy p_(j) <= alpha / (m - j + 1). Returns a bool
    array, the shape of `pvalues`."""
    flat = np.asarray(pvalues, float).ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    passes = flat[order] <= alpha / (m - np.arange(m))
    # the step-down stops at the first failure: everything from there on is kept
    first_fail = int(np.argmin(passes)) if not passes.all() else m
    out = np.zeros(m, bool)
    out[order[:first_fail]] = True
    return out.reshape(np.shape(pvalues))


def bonferroni(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Rejections at p <= alpha / m: bool, the shape of `pvalues`."""
    p = np.asarray(pvalues, float)
    return p <= alpha / max(p.size, 1)


CORRECTIONS = {"holm": holm, "bonferroni": bonferroni}


def certify(counts0: torch.Tensor, counts: torch.Tensor, scored: np.ndarray, sigma: float, alpha: float,
            radii: Sequence[float], correction: str = "holm") -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """SegCertify's decision per voxel.

    Args:
        counts0: the selection counts `[K, ...]` (`vote_counts` of the n0 copies).
        counts: the estimation counts `[K, ...]` (of the n copies).
        scored: the voxels tested, bool `[...]` (the others are neither certified nor counted
            in the correction).
        sigma: the noise's sd.
        alpha: the family-wise error per radius.
        radii: L2 radii on the range-normalised scale (0: the smoothed prediction itself).
        correction: "holm" or "bonferroni".

    Returns:
        (the smoothed class per voxel `[...]` int, {radius: certified voxels, bool `[...]`}).
    """
    label = counts0.argmax(0).cpu().numpy()
    n = int(counts.sum(0).flatten()[0])  # the copies: every voxel got one vote from each
    hits = counts.gather(0, torch.from_numpy(label)[None].to(counts.device))[0].cpu().numpy()
    out = {}
    for r in radii:
        p = binomial_pvalues(hits[scored], n, float(stats.norm.cdf(r / sigma)))
        mask = np.zeros(label.shape, bool)
        mask[scored] = CORRECTIONS[correction](p, alpha)
        out[float(r)] = mask
    return label, out


def certified_dice(label: np.ndarray, certified: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """The lower bound of each class's Dice (or `Regions`' region's) over every perturbation
    within the radius `certified` holds at: a certified voxel keeps `label`; an abstained one
    is counted against each class the worst way, a miss where the reference has the class and
    a false positive where it has not. Reference voxels >= K are not scored.

    Args:
        label: the smoothed labels `[...]`.
        certified: bool `[...]`.
        ref: the reference `[...]`.
        num_classes: K (or a `Regions`).

    Returns:
        `[K-1]` (or `[R]`) float: NaN where the class is in neither the reference nor any
        possible prediction (every voxel certified, none labelled with it).
    """
    ref_t, label_t = torch.as_tensor(ref), torch.as_tensor(label)
    kept, scored = torch.as_tensor(certified), ref_t < num_classes
    out = []
    for labels in scored_sets(num_classes):
        truth, said = within(ref_t, labels) & scored, within(label_t, labels) & kept & scored
        tp = int((truth & said).sum())
        fn = int(truth.sum()) - tp
        fp = int((said & ~truth).sum()) + int((~kept & scored & ~truth).sum())
        denom = 2 * tp + fp + fn
        out.append(np.nan if denom == 0 else 2.0 * tp / denom)
    return np.array(out)
