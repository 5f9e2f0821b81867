"""The paper's post-processing, kept only where it helps (as nnU-Net decides).

- Organs keep their largest connected component; the rest becomes background.
- Lesion components smaller than a threshold (a fraction of the dataset's mean lesion
  component volume) are relabelled to the class that surrounds them.
`decide` measures on validation predictions whether each step raises mean Dice.
"""
from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from rog.evaluate.metrics import dice_per_class

SMALL_LESION_FRACTION = 0.1  # threshold = this fraction of the mean lesion component volume


def keep_largest_component(label: np.ndarray, classes) -> np.ndarray:
    """For each class in `classes`, keep its largest 26-connected component; `[X, Y, Z]` -> same."""
    out = label.copy(order="K")  # keep the layout: a Fortran-ordered map stays so (fast NIfTI writes)
    for k in classes:
        comps, n = cc3d.connected_components(label == k, connectivity=26, return_N=True)
        if n > 1:
            sizes = np.bincount(comps.ravel(order="K"))[1:]
            out[(comps > 0) & (comps != np.argmax(sizes) + 1)] = 0
    return out


def relabel_small_lesions(label: np.ndarray, min_voxels: dict[int, float]) -> np.ndarray:
    """Components of lesion class k smaller than `min_voxels[k]` take the most common label
    on their outer boundary (the surrounding class; ties to the lower label, background when
    nothing surrounds them). `[X, Y, Z]` -> same shape.

    Linear in the volume: one labelling per class, then each small component is handled
    inside its own bounding box grown by one voxel (`ndimage.find_objects`), so a noisy map
    with many components costs the sum of their boxes, not components x volume."""
    out = label.copy(order="K")  # keep the layout: a Fortran-ordered map stays so (fast NIfTI writes)
    ball = np.ones((3, 3, 3), bool)
    for k, limit in min_voxels.items():
        comps, n = cc3d.connected_components(label == k, connectivity=26, return_N=True)
        if n == 0:
            continue
        small = np.bincount(comps.ravel(order="K"), minlength=n + 1) < limit
        for c, box in enumerate(ndimage.find_objects(comps), start=1):
            if not small[c]:
                continue
            grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, dim)) for s, dim in zip(box, label.shape))
            mask = comps[grown] == c
            # the 26-neighbour ring lies within the grown box, where dilation equals the global one
            ring = ndimage.binary_dilation(mask, ball) & ~mask
            around = label[grown][ring]
            around = around[around != k]
            out[grown][mask] = np.bincount(around).argmax() if around.size else 0
    return out


def postprocess(label: np.ndarray, steps: dict, organ_classes, lesion_min_voxels: dict[int, float]) -> np.ndarray:
    """Apply the enabled `steps` ({'largest_component': bool, 'small_lesions': bool})."""
    if steps.get("largest_component") and organ_classes:
        label = keep_largest_component(label, organ_classes)
    if steps.get("small_lesions") and lesion_min_voxels:
        label = relabel_small_lesions(label, lesion_min_voxels)
    return label


def class_groups(plan, voxel_volume_mm3: float) -> tuple[list[int], dict[int, float]]:
    """Organ class indices, and lesion class -> minimum component size in voxels of a grid
    whose voxels have volume `voxel_volume_mm3`."""
    target_voxel = float(np.prod(plan.target_spacing))
    organs, lesions = [], {}
    for idx, name in plan.labels.items():
        if idx == "0":
            continue
        if plan.class_kinds.get(name, "organ") == "lesion":
            mean = plan.mean_object_voxels.get(idx)
            if mean:
                lesions[int(idx)] = SMALL_LESION_FRACTION * mean * target_voxel / voxel_volume_mm3
        else:
            organs.append(int(idx))
    return organs, lesions


def decide(preds, refs, num_classes: int, organ_classes, lesion_min_voxels) -> dict:
    """Enable each step, in order, only if it raises the mean foreground Dice over the
    validation pairs `(preds, refs)` (lists of label maps). Returns the steps and the Dice."""
    def mean_dice(labels):
        return float(np.nanmean([np.nanmean(dice_per_class(p, r, num_classes)) for p, r in zip(labels, refs)]))

    steps = {"largest_component": False, "small_lesions": False}
    current = list(preds)
    base = best = mean_dice(current)
    for step in steps:
        trial = [postprocess(p, {step: True}, organ_classes, lesion_min_voxels) for p in current]
        score = mean_dice(trial)
        if score > best:
            steps[step], best, current = True, score, trial
    return {"steps": steps, "dice_without": base, "dice_with": best}
