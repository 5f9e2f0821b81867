"""Dataset fingerprint (`fingerprint.json`): the statistics the planner needs.

Per case: spacing, shape, shape after cropping to the non-zero region, and the connected
components of each class (bounding box and volume, in mm). Per channel: foreground intensity
mean, std and 0.5/99.5 percentiles from a seeded sample. Per class: mean component bounding box
and volume, converted to voxels at the target (median) spacing. A class absent from a case is
simply not counted for that case.
"""
from __future__ import annotations

import cc3d
import numpy as np

from rog.data.dataset import Case, Dataset, DatasetError
from rog.data.io import canonical_axes
from rog.data.validate import read_case
from rog.pool import worker_pool
from rog.progress import progress_bar

SAMPLES_PER_CASE = 10_000


def nonzero_bbox(image: np.ndarray, label: np.ndarray | None = None) -> list[list[int]]:
    """Bounding box `[[lo, hi), ...]` per spatial axis of voxels non-zero in any channel of
    `image` `[C, X, Y, Z]` (or labelled in `label` `[X, Y, Z]`). Whole volume if all zero."""
    mask = np.any(image != 0, axis=0)
    if label is not None:
        mask |= label > 0
    if not mask.any():
        return [[0, n] for n in mask.shape]
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append([int(idx[0]), int(idx[-1]) + 1])
    return out


def _case_stats(args: tuple[Dataset, Case, int]) -> dict:
    ds, case, seed = args
    num_classes = ds.num_classes
    image, geom, label = read_case(ds, case)
    axes = canonical_axes(geom)  # statistics per world axis, however the array is stored
    image, label = image.transpose(0, *(a + 1 for a in axes)), label.transpose(axes)
    bbox = nonzero_bbox(image, label)
    spacing = np.array(geom.spacing)[list(axes)]
    fg = label > 0
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(fg)
    if idx.size > SAMPLES_PER_CASE:
        idx = rng.choice(idx, SAMPLES_PER_CASE, replace=False)
    samples = image.reshape(image.shape[0], -1)[:, idx]
    classes = {}
    for k in range(1, num_classes):
        comps, n = cc3d.connected_components(label == k, connectivity=26, return_N=True)
        if n == 0:
            continue
        stats = cc3d.statistics(comps)
        boxes = [[s.stop - s.start for s in bb] for bb in stats["bounding_boxes"][1:]]
        classes[str(k)] = {
            "bbox_mm": (np.array(boxes) * spacing).tolist(),
            "volume_mm3": (np.asarray(stats["voxel_counts"][1:]) * spacing.prod()).tolist(),
        }
    return {
        "name": case.name, "spacing": spacing.tolist(), "shape": list(label.shape),
        "cropped_shape": [hi - lo for lo, hi in bbox], "classes": classes,
        "samples": samples.tolist(),
    }


def compute_fingerprint(ds: Dataset, seed: int = 0, workers: int = 1, progress: bool = True) -> dict:
    """Compute the fingerprint of `ds`'s training cases (see module doc). Pure: writes nothing."""
    if not ds.training:
        raise DatasetError(f"{ds.root / 'dataset.json'}: the training list is empty: a plan needs training cases "
                           "(a dataset of test cases alone can be predicted, attacked and evaluated with a model "
                           "trained elsewhere)")
    jobs = [(ds, c, seed * 100_003 + i) for i, c in enumerate(ds.training)]
    if workers > 1:
        with worker_pool(workers) as pool:
            per_case = list(progress_bar(pool.map(_case_stats, jobs), total=len(jobs), desc="fingerprint",
                                 disable=not progress))
    else:
        per_case = [_case_stats(j) for j in progress_bar(jobs, desc="fingerprint", disable=not progress)]
    spacings = np.array([c["spacing"] for c in per_case])
    target = np.median(spacings, axis=0)
    shapes = np.array([np.array(c["cropped_shape"]) * np.array(c["spacing"]) / target for c in per_case])
    intensity = []
    samples = np.concatenate([np.asarray(c.pop("samples"), dtype=np.float64).reshape(ds.num_channels, -1)
                              for c in per_case], axis=1)
    for ch, modality in enumerate(ds.modalities):
        v = samples[ch]
        if v.size == 0:
            raise DatasetError(f"{ds.root}: no foreground voxels in any training case")
        intensity.append({"modality": modality, "mean": float(v.mean()), "std": float(v.std()),
                          "percentile_00_5": float(np.percentile(v, 0.5)),
                          "percentile_99_5": float(np.percentile(v, 99.5))})
    classes = {}
    for k in range(1, ds.num_classes):
        boxes = [b for c in per_case for b in c["classes"].get(str(k), {}).get("bbox_mm", [])]
        vols = [v for c in per_case for v in c["classes"].get(str(k), {}).get("volume_mm3", [])]
        present = sum(str(k) in c["classes"] for c in per_case)
        classes[str(k)] = {
            "name": ds.labels[k], "cases_present": present, "components": len(vols),
            "mean_bbox_voxels": (np.mean(boxes, axis=0) / target).tolist() if boxes else None,
            "mean_volume_voxels": float(np.mean(vols) / target.prod()) if vols else None,
        }
    return {
        "dataset": ds.name, "layout": ds.layout, "modalities": ds.modalities,
        "labels": {str(k): v for k, v in ds.labels.items()}, "ignore_label": ds.ignore_label,
        "target_spacing": target.tolist(), "median_shape": np.median(shapes, axis=0).tolist(),
        "intensity": intensity, "classes": classes, "cases": per_case,
    }
