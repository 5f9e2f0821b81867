"""Segmentation metrics per case and class: Dice, HD95 and normalised surface Dice.

Dice follows nnU-Net's convention: NaN when prediction and reference are both empty for a
class, and NaN values are excluded from means. HD95 and surface Dice are MONAI's, with the
voxel spacing and sub-voxel surface elements (which match DeepMind's surface-distance).

Reference voxels holding a value >= K (nnU-Net v2's ignore label, the highest value) are not
scored: the prediction there counts for no class, as in nnU-Net's evaluation.

A region-based model (nnU-Net's BraTS kind) is scored on regions, each a set of labels, as
nnU-Net's evaluation scores it: its K is a `Regions`, and "class" below then reads "region".
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch


class Regions(int):
    """K, the number of labels (background included), of a model scored on regions: region i
    is where the label map holds one of `members[i]` (dataset.json's `regions`, e.g. BraTS's
    whole tumour (1, 2, 3), tumour core (2, 3), enhancing tumour (3,)). An int so that
    everything sized by the labels (argmax, one-hot, the ignore label K, result files) takes it
    as it is; the metrics here and the attacks' Dice score its regions instead of 1..K-1."""

    members: tuple[tuple[int, ...], ...]

    def __new__(cls, num_classes: int, members):
        self = super().__new__(cls, num_classes)
        self.members = tuple(tuple(int(c) for c in np.atleast_1d(m)) for m in members)  # a label alone: a region too
        if not self.members or any(not m or min(m) < 1 or max(m) >= num_classes for m in self.members):
            raise ValueError(f"regions {self.members}: each must be a non-empty set of the labels 1..{num_classes - 1}")
        return self

    def __reduce__(self):  # copies and pickles keep the regions (printed, it is K, as any int)
        return Regions, (int(self), self.members)


def scored_sets(num_classes: int) -> tuple[tuple[int, ...], ...]:
    """What Dice is taken over: a `Regions`' members, else each foreground label alone."""
    return getattr(num_classes, "members", None) or tuple((k,) for k in range(1, num_classes))


def within(t: torch.Tensor, labels: tuple[int, ...]) -> torch.Tensor:
    """Where the label map `t` (any shape) holds one of `labels`: bool, t's shape."""
    return t == labels[0] if len(labels) == 1 else torch.isin(t, torch.tensor(labels, device=t.device))


def dice_per_class(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor,
                   num_classes: int) -> np.ndarray:
    """Dice of foreground classes 1..K-1 between integer label maps of equal shape.

    Args:
        pred: a label map of any shape (numpy or torch).
        ref: the reference, the same shape.
        num_classes: K, background included.

    Returns:
        `[K-1]` float64 (`[R]` for `Regions`), NaN where both maps lack the class.
    """
    pred, ref = torch.as_tensor(pred), torch.as_tensor(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from reference {tuple(ref.shape)}")
    sets = scored_sets(num_classes)
    out = np.empty(len(sets))
    scored = ref < num_classes
    for i, labels in enumerate(sets):
        p, r = within(pred, labels) & scored, within(ref, labels)
        denom = int(p.sum() + r.sum())
        out[i] = np.nan if denom == 0 else 2.0 * int((p & r).sum()) / denom
    return out


def mean_dice(per_class: np.ndarray) -> float:
    """Mean foreground Dice from `dice_per_class`, NaN classes left out; 1 when every class is
    absent from both maps (the same convention as `dice_batch`)."""
    return 1.0 if np.all(np.isnan(per_class)) else float(np.nanmean(per_class))


def dice_batch(pred: torch.Tensor, ref: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean foreground Dice per instance.

    Args:
        pred: label maps `[B, ...]` (or `[B, 1, ...]`).
        ref: the references, the same shape.
        num_classes: K, background included.

    Returns:
        `[B]`: classes absent from both maps are left out of the mean; an instance where every
        class is absent from both gets Dice 1 (nothing to find, nothing found).
    """
    b = pred.shape[0]
    p = pred.reshape(b, -1)
    r = ref.reshape(b, -1)
    scored = r < num_classes
    scores = []
    for labels in scored_sets(num_classes):
        pk, rk = within(p, labels) & scored, within(r, labels)
        inter = (pk & rk).sum(1).float()
        denom = (pk.sum(1) + rk.sum(1)).float()
        scores.append(torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.full_like(denom, float("nan"))))
    s = torch.stack(scores, 1)
    mean = torch.nanmean(s, 1)
    return torch.where(torch.isnan(mean), torch.ones_like(mean), mean)


def _masks(label: np.ndarray, num_classes: int) -> torch.Tensor:
    """`[1, 1 + S, ...]`: nothing scored (a placeholder background, left out), then each scored set."""
    t = torch.as_tensor(np.asarray(label, dtype=np.int64))
    sets = [within(t, labels) for labels in scored_sets(num_classes)]
    return torch.stack([~torch.stack(sets).any(0), *sets])[None].float()


def _scored(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Both maps with the unscored reference voxels (>= K) set to background: surfaces are
    measured between what is scored."""
    ignored = np.asarray(ref) >= num_classes
    if not ignored.any():
        return pred, ref
    return np.where(ignored, 0, pred), np.where(ignored, 0, ref)


def surface_metrics(pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float],
                    tolerance_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """HD95 (mm) and normalised surface Dice at `tolerance_mm` per foreground class.

    Returns two `[K-1]` arrays (`[R]` for `Regions`); NaN where the class is absent from both maps. Where it is
    absent from exactly one (missed, or predicted where there is none), HD95 has no finite
    value: it gets the penalty `hd95_penalty` (the volume's diagonal in mm, the largest
    distance possible in it, as BraTS's 373 mm is for its volumes) and surface Dice 0, so a
    miss weighs in every mean instead of leaving it.
    """
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    pred, ref = _scored(pred, ref, num_classes)
    p, r = _masks(pred, num_classes), _masks(ref, num_classes)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty classes; handled below
        hd = compute_hausdorff_distance(p, r, include_background=False, percentile=95,
                                        spacing=spacing)[0].numpy().astype(float)
        nsd = compute_surface_dice(p, r, [tolerance_mm] * (p.shape[1] - 1), include_background=False,
                                   spacing=spacing, use_subvoxels=True)[0].numpy().astype(float)
    for i in range(p.shape[1] - 1):
        has_p, has_r = bool(p[0, i + 1].any()), bool(r[0, i + 1].any())
        if not has_p and not has_r:
            hd[i] = nsd[i] = np.nan
        elif has_p != has_r:
            hd[i], nsd[i] = hd95_penalty(ref.shape, spacing), 0.0
    return hd, nsd


def hd95_penalty(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """HD95 (mm) given to a class missing from the prediction or the reference: the diagonal
    of the volume `shape` (voxels) at `spacing` (mm)."""
    return float(np.linalg.norm(np.asarray(shape, float) * np.asarray(spacing, float)))


def case_metrics(pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float],
                 tolerance_mm: float = 1.0) -> dict:
    """Dice, HD95 and surface Dice of one case.

    Args:
        pred: a label map `[X, Y, Z]`.
        ref: the reference, the same shape.
        num_classes: K, background included.
        spacing: mm per voxel axis.
        tolerance_mm: the surface Dice tolerance.

    Returns:
        {'dice', 'hd95', 'nsd', 'missed'}, each a list over foreground classes 1..K-1 (regions
        for `Regions`); 'missed' marks classes present in exactly one of the maps (their HD95
        is the penalty).
    """
    pred, ref = _scored(pred, ref, num_classes)  # once: the metrics below then find nothing to mask
    hd, nsd = surface_metrics(pred, ref, num_classes, spacing, tolerance_mm)
    p, r = torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(ref))
    missed = [bool(within(p, s).any()) != bool(within(r, s).any()) for s in scored_sets(num_classes)]
    return {"dice": dice_per_class(pred, ref, num_classes).tolist(), "hd95": hd.tolist(), "nsd": nsd.tolist(),
            "missed": missed}
