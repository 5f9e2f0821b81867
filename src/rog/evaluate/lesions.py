"""Lesion-level damage: per class, the connected components (cc3d, 26-connected) of the
reference and of a prediction matched by overlap, so that an attack that erases a small
lesion beside a large organ is seen even where mean Dice hardly moves.

A reference lesion is detected where some predicted component of its class overlaps it with
IoU at least `overlap` (default 0.1, a loose match: a lesion found but outlined badly still
counts as found); a predicted component that overlaps no reference lesion so is invented.
Per class: detected, missed, invented, the lesion-wise F1 = 2 TP / (2 TP + FN + FP) (NaN where
neither map has a component), and the predicted volume (mL where the voxel size is known,
else voxels).
"""
from __future__ import annotations

import cc3d
import numpy as np

from rog.evaluate.metrics import scored_sets

OVERLAP = 0.1


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=26,
                                          return_N=True)
    return labels, int(n)


def match_lesions(pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing=None,
                  overlap: float = OVERLAP) -> dict:
    """The lesion counts of `pred` against `ref` (label maps of one shape, 2-D or 3-D).

    Args:
        pred: the predicted label map.
        ref: the reference; voxels at K or above (an ignore label) are in no lesion of either.
        num_classes: K (or `Regions`: components of each region).
        spacing: mm per voxel axis, for volumes in mL (None: volumes in voxels).
        overlap: the IoU a predicted component needs with a reference lesion to match it.

    Returns:
        {"detected", "missed", "invented": ints per class; "f1": floats per class;
        "volume": the predicted volume per class} and "unit", "mL" or "voxels".
    """
    scored = ref < num_classes
    voxel = float(np.prod(spacing)) / 1000.0 if spacing is not None else 1.0
    out: dict = {"detected": [], "missed": [], "invented": [], "f1": [], "volume": []}
    for labels in scored_sets(num_classes):
        r, nr = _components(np.isin(ref, labels) & scored)
        p, np_ = _components(np.isin(pred, labels) & scored)
        # voxel counts of every (reference lesion, predicted component) pair that overlaps
        both = (r > 0) & (p > 0)
        pairs, inter = np.unique(np.stack([r[both], p[both]]), axis=1, return_counts=True)
        size_r = np.bincount(r.ravel(), minlength=nr + 1)
        size_p = np.bincount(p.ravel(), minlength=np_ + 1)
        iou = inter / (size_r[pairs[0]] + size_p[pairs[1]] - inter) if inter.size else np.zeros(0)
        good = iou >= overlap
        tp = len(set(pairs[0][good].tolist()))
        fp = np_ - len(set(pairs[1][good].tolist()))
        fn = nr - tp
        out["detected"].append(tp)
        out["missed"].append(fn)
        out["invented"].append(fp)
        out["f1"].append(float("nan") if nr + np_ == 0 else 2 * tp / (2 * tp + fn + fp))
        out["volume"].append(float(size_p[1:].sum()) * voxel)
    out["unit"] = "mL" if spacing is not None else "voxels"
    return out
