"""Segmentation metrics per case and class: Dice, HD95 and normalised surface Dice.

Dice follows nnU-Net's convention: NaN when prediction and reference are both empty for a
class, and NaN values are excluded from means. HD95 and surface Dice are MONAI's, with the
voxel spacing and sub-voxel surface elements (which match DeepMind's surface-distance).

Reference voxels holding a value >= K (nnU-Net v2's ignore label, the highest value) are not
scored: the prediction there counts for no class, as in nnU-Net's evaluation.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch


def dice_per_class(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor,
                   num_classes: int) -> np.ndarray:
    """Dice of foreground classes 1..K-1 between integer label maps of equal shape.

    Args:
        pred: a label map of any shape (numpy or torch).
        ref: the reference, the same shape.
        num_classes: K, background included.

    Returns:
        `[K-1]` float64, NaN where both maps lack the class.
    """
    pred, ref = torch.as_tensor(pred), torch.as_tensor(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from reference {tuple(ref.shape)}")
    out = np.empty(num_classes - 1)
    scored = ref < num_classes
    for k in range(1, num_classes):
        p, r = (pred == k) & scored, ref == k
        denom = int(p.sum() + r.sum())
        out[k - 1] = np.nan if denom == 0 else 2.0 * int((p & r).sum()) / denom
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
    for k in range(1, num_classes):
        pk, rk = (p == k) & scored, r == k
        inter = (pk & rk).sum(1).float()
        denom = (pk.sum(1) + rk.sum(1)).float()
        scores.append(torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.full_like(denom, float("nan"))))
    s = torch.stack(scores, 1)
    mean = torch.nanmean(s, 1)
    return torch.where(torch.isnan(mean), torch.ones_like(mean), mean)


def _onehot(label: np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(label, dtype=np.int64))
    return torch.nn.functional.one_hot(t, num_classes).movedim(-1, 0)[None].float()


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

    Returns two `[K-1]` arrays; NaN where the class is absent from both maps. Where it is
    absent from exactly one (missed, or predicted where there is none), HD95 has no finite
    value: it gets the penalty `hd95_penalty` (the volume's diagonal in mm, the largest
    distance possible in it, as BraTS's 373 mm is for its volumes) and surface Dice 0, so a
    miss weighs in every mean instead of leaving it.
    """
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    pred, ref = _scored(pred, ref, num_classes)
    p, r = _onehot(pred, num_classes), _onehot(ref, num_classes)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty classes; handled below
        hd = compute_hausdorff_distance(p, r, include_background=False, percentile=95,
                                        spacing=spacing)[0].numpy().astype(float)
        nsd = compute_surface_dice(p, r, [tolerance_mm] * (num_classes - 1), include_background=False,
                                   spacing=spacing, use_subvoxels=True)[0].numpy().astype(float)
    for k in range(1, num_classes):
        has_p, has_r = bool((pred == k).any()), bool((ref == k).any())
        if not has_p and not has_r:
            hd[k - 1] = nsd[k - 1] = np.nan
        elif has_p != has_r:
            hd[k - 1], nsd[k - 1] = hd95_penalty(ref.shape, spacing), 0.0
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
        {'dice', 'hd95', 'nsd', 'missed'}, each a list over foreground classes 1..K-1; 'missed'
        marks classes present in exactly one of the maps (their HD95 is the penalty).
    """
    pred, ref = _scored(pred, ref, num_classes)  # once: the metrics below then find nothing to mask
    hd, nsd = surface_metrics(pred, ref, num_classes, spacing, tolerance_mm)
    missed = [bool((pred == k).any()) != bool((ref == k).any()) for k in range(1, num_classes)]
    return {"dice": dice_per_class(pred, ref, num_classes).tolist(), "hd95": hd.tolist(), "nsd": nsd.tolist(),
            "missed": missed}
