"""The validation layer every command shares: what makes a case usable, checked on the
arrays a stage has just read (so no stage reads a volume twice).

`rog check` lists every problem (`image_problems`, `label_problems`); `plan`, `preprocess`
and `predict` read cases through `read_case` / `read_valid_image`, which stop at the first
problem with a `VolumeError` naming the file: NaN or Inf voxels, a channel count other than
the dataset's, a volume too small to plan, label values the dataset does not declare, a
label on another grid than its image.
"""
from __future__ import annotations

import numpy as np

from rog.data.dataset import Case, Dataset
from rog.data.io import Geometry, VolumeError, read_image, read_label

MIN_EXTENT = 8  # voxels per axis: smaller volumes cannot be planned or patched


def image_problems(image: np.ndarray, geom: Geometry, num_channels: int) -> list[str]:
    """Problems of an image `[C, X, Y, Z]` read from disk."""
    out = []
    if image.shape[0] != num_channels:
        out.append(f"{image.shape[0]} channel(s), dataset.json declares {num_channels}")
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        out.append(f"{bad} NaN/Inf voxel(s)")
    small = [a for a, n in enumerate(geom.shape) if n < MIN_EXTENT]
    if small:
        out.append(f"shape {geom.shape} is smaller than {MIN_EXTENT} voxels on axis {small}")
    return out


def label_problems(label: np.ndarray, lgeom: Geometry, geom: Geometry | None, labels=None) -> list[str]:
    """Problems of a label map `[X, Y, Z]` against its image's grid (`geom`) and, where given,
    the declared label values."""
    out = []
    undeclared = sorted(set(np.unique(label).tolist()) - set(labels)) if labels is not None else []
    if undeclared:
        out.append(f"label values {undeclared} not declared in dataset.json labels {sorted(labels)}")
    if geom is not None:
        if lgeom.shape != geom.shape:
            out.append(f"label shape {lgeom.shape} differs from image shape {geom.shape}")
        elif not lgeom.same_grid(geom):
            out.append("label affine differs from the image affine")
    return out


def read_valid_image(case: Case, num_channels: int) -> tuple[np.ndarray, Geometry]:
    """(image `[C, X, Y, Z]`, geometry) of `case`, or a VolumeError naming the first problem."""
    image, geom = read_image(case.images)
    problems = image_problems(image, geom, num_channels)
    if problems:
        raise VolumeError(case.images[0], problems[0])
    return image, geom


def read_case(ds: Dataset, case: Case) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
    """(image, geometry, label or None) of a dataset case, validated (see module doc)."""
    image, geom = read_valid_image(case, ds.num_channels)
    if case.label is None:
        return image, geom, None
    label, lgeom = read_label(case.label)
    problems = label_problems(label, lgeom, geom, ds.label_values)
    if problems:
        raise VolumeError(case.label, problems[0])
    return image, geom, label
