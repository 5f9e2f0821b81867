"""Voxel-wise attack losses for segmentation: each maps logits `[B, K, ...]` and labels
`[B, ...]` to one loss per instance `[B]` (mean over voxels), to be MAXIMISED by the attack.
Voxels labelled K or above (nnU-Net v2's ignore label) add nothing to any loss, as they add
nothing to the Dice the attack lowers.

A model scored on regions (`rog.evaluate.metrics.Regions`) is attacked on its regions:
`on_regions` takes a loss to each region's two-class problem, region against the rest.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rog.evaluate.metrics import within


def scored(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels `[B, ...]` with the ignored voxels set to class 0, so that gathers stay in range;
    their weight `[B, ...]`, 1 where the voxel is scored, 0 where ignored)."""
    keep = y < logits.shape[1]
    return torch.where(keep, y, 0), keep.to(logits.dtype)


def _mean(voxel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # x * 1.0 is exact: with nothing ignored, the plain mean over voxels
    return (voxel * weight).flatten(1).mean(1)


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y, w = scored(logits, y)
    return _mean(F.cross_entropy(logits, y, reduction="none"), w)


def soft_dice(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the softmax against the one-hot labels, mean over the foreground
    classes labelled in the instance (1 where none is): the metric the benchmark scores, made
    smooth. For few parameters that move every voxel at once (an artefact's), CE's sum over the
    background can point away from what lowers Dice."""
    y, w = scored(logits, y)
    p = logits.softmax(1) * w.unsqueeze(1)
    onehot = F.one_hot(y, logits.shape[1]).movedim(-1, 1).to(p) * w.unsqueeze(1)
    inter, size = (p * onehot).flatten(2).sum(-1)[:, 1:], (p + onehot).flatten(2).sum(-1)[:, 1:]
    present = onehot.flatten(2).sum(-1)[:, 1:] > 0
    dice = torch.where(present, 2 * inter / size.clamp(min=1e-12), 0.0)
    return 1 - dice.sum(1) / present.sum(1).clamp(min=1)


def _sorted(logits):
    return logits.sort(dim=1).values  # ascending over classes


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), voxel-wise: the margin of the true
    class over the best other, divided by z_pi1 - z_pi3. Binary tasks have no third logit:
    there the margin is divided by the instance's mean margin size (`binary_margin_ratio`)."""
    if logits.shape[1] == 2:
        return binary_margin_ratio(logits, y)
    y, w = scored(logits, y)
    z = _sorted(logits)
    zy = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    top = z[:, -1]
    best_other = torch.where(logits.argmax(1) == y, z[:, -2], top)
    return _mean(-(zy - best_other) / (top - z[:, -3] + 1e-12), w)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR, voxel-wise: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2). With three
    classes the scale is z_pi1 - z_pi3 (as in DLR); with two the target is the other class and
    the loss is `binary_margin_ratio`."""
    k = logits.shape[1]
    if k == 2:
        return binary_margin_ratio(logits, y)
    y, w = scored(logits, y)
    z = _sorted(logits)
    zy = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    zt = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    scale = z[:, -1] - (0.5 * (z[:, -3] + z[:, -4]) if k >= 4 else z[:, -3])
    return _mean(-(zy - zt) / (scale + 1e-12), w)


def binary_margin_ratio(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DLR's replacement for two classes: voxel margin m = z_y - z_other over |m| + s, where s
    is the instance's mean |m| over voxels; mean over voxels, negated.

    Like DLR it is invariant to shifting and scaling the logits (m and s scale together), so a
    model cannot hide behind large logits as it can from CE; unlike a per-voxel m / |m| it has
    a gradient, largest at the voxels nearest the decision boundary (|m| small against s)."""
    y, w = scored(logits, y)
    zy = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    m = (2 * zy - logits.sum(1)) * w  # z_y - z_other with two classes; 0 where ignored
    # the normaliser is a scale, not a target: were it differentiated, raising a large margin
    # would raise s and so lower -m / (|m| + s) elsewhere, and the ascent would push some
    # correct voxels to larger margins (DLR's z_pi1 - z_pi3 is not detached, but it is a
    # voxel's own logits, not a mean over the instance)
    s = m.abs().flatten(1).mean(1).view(-1, *[1] * (m.ndim - 1)).detach()
    return _mean(-m / (m.abs() + s + 1e-12), w)


def segpgd(logits: torch.Tensor, y: torch.Tensor, step: int, total: int) -> torch.Tensor:
    """SegPGD (Gu et al. 2022): CE weighted 1 - lambda on correct voxels and lambda on wrong
    ones, lambda = step / (2 total), shifting the attack's effort onto the voxels still right."""
    lam = step / (2.0 * total)
    y, w = scored(logits, y)
    voxel = F.cross_entropy(logits, y, reduction="none")
    correct = (logits.argmax(1) == y).float()
    return _mean((1 - lam) * correct * voxel + lam * (1 - correct) * voxel, w)


def ce_right(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE of the voxels still right (the wrong ones count 0): SegPGD's loss with its weight
    left on the correct voxels, so no effort goes to voxels already lost."""
    y, w = scored(logits, y)
    correct = (logits.argmax(1) == y).to(logits.dtype)
    return _mean(correct * F.cross_entropy(logits, y, reduction="none"), w)


def jsd(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the softmax p and the one-hot label q, summed over the
    classes, mean over voxels: JS = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2 (Croce,
    Singh and Hein 2024, SEA's L_JS). At most log 2 a voxel, so voxels already wrong stop
    pulling, where CE keeps growing on them; with q one-hot KL(q || m) = -log m_y."""
    y, w = scored(logits, y)
    p = logits.softmax(1)
    q = F.one_hot(y, logits.shape[1]).movedim(-1, 1).to(p)
    m = (p + q) / 2
    kl_pm = (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)).sum(1)  # 0 log 0 = 0
    kl_qm = -m.gather(1, y.unsqueeze(1)).squeeze(1).log()
    return _mean((kl_pm + kl_qm) / 2, w)


def ce_right_balanced(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`ce_right` with every labelled class counting equally, as in Dice's mean over classes
    (SEA's L_MCE-Bal): voxel i of class c weighted N / (C n_c), N the scored voxels, n_c those of
    class c, C the classes present, so that a small structure weighs as much as the background."""
    y, w = scored(logits, y)
    counts = (F.one_hot(y, logits.shape[1]).to(w) * w.unsqueeze(-1)).flatten(1, -2).sum(1)  # [B, K], scored only
    present = (counts > 0).sum(1, keepdim=True).clamp(min=1)
    per_class = w.flatten(1).sum(1, keepdim=True) / (present * counts.clamp(min=1))  # [B, K]
    weight = per_class.gather(1, y.flatten(1)).view_as(w)
    correct = (logits.argmax(1) == y).to(logits.dtype)
    return _mean(weight * correct * F.cross_entropy(logits, y, reduction="none"), w)


def spherical_right(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The masked spherical loss (SEA's L_Mask-Sph, as we read it): on the voxels still right,
    minus the true class's coordinate of the logits projected onto the unit sphere, -z_y / ||z||;
    the wrong voxels count 0. Scale-free in the logits, unlike CE and the margin."""
    y, w = scored(logits, y)
    cos = logits.gather(1, y.unsqueeze(1)).squeeze(1) / logits.norm(dim=1).clamp(min=1e-12)
    correct = (logits.argmax(1) == y).to(logits.dtype)
    return _mean(-correct * cos, w)


def cospgd(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CosPGD (Agnihotri et al. 2024): voxel CE weighted by the (detached) cosine similarity
    between the softmax output and the one-hot label."""
    y, w = scored(logits, y)
    p = logits.softmax(1)
    cos = p.gather(1, y.unsqueeze(1)).squeeze(1) / p.norm(dim=1).clamp(min=1e-12)
    return _mean(cos.detach() * F.cross_entropy(logits, y, reduction="none"), w)


def correct_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margin z_y - max_{i != y} z_i of the voxels still right (the wrong ones count 0), mean
    per labelled class, then over the classes present: `[B]`, to be lowered (Square's margin
    loss, voxel-wise and balanced like Dice, so neither the background's confidence nor
    voxels already wrong steer it)."""
    yf = y.flatten(1)  # the ignored voxels (>= K) are in no class's mean below
    y, _ = scored(logits, y)
    zy = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    other = logits.scatter(1, y.unsqueeze(1), float("-inf")).max(1).values
    m = (zy - other).clamp(min=0).flatten(1)
    total = torch.zeros(m.shape[0], device=m.device, dtype=m.dtype)
    present = torch.zeros_like(total)
    for k in range(logits.shape[1]):
        mask = (yf == k).to(m.dtype)
        size = mask.sum(1)
        total += torch.where(size > 0, (m * mask).sum(1) / size.clamp(min=1), 0.0)
        present += (size > 0).to(m.dtype)
    return total / present.clamp(min=1)


def on_regions(loss, members):
    """`loss` (logits `[B, K, ...]`, labels `[B, ...]` -> `[B]`) taken on regions, each a tuple
    of labels (`Regions.members`): per region, the two-class logits (0, m) with m = max over
    its labels' logits - max over the others', so m > 0 exactly where the argmax label lies in
    the region (the region as the label map holds it), against the labels' membership; the
    mean over regions. Ignored voxels (>= K) stay ignored. Returns a loss of the same form."""
    def region_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        total = 0.0
        for labels in members:
            inside = torch.zeros(k, dtype=torch.bool, device=logits.device)
            inside[list(labels)] = True
            m = logits[:, inside].amax(1) - logits[:, ~inside].amax(1)
            # 2 = ignored for a two-class problem, as K is for K classes
            member = torch.where(y >= k, 2, within(y, labels).long())
            total = total + loss(torch.stack([torch.zeros_like(m), m], 1), member)
        return total / len(members)
    return region_loss
