"""`rog check`: list every problem of a dataset folder at once.

Each problem names the case and the file. Voxel data is fully read, so truncated archives,
NaN/Inf voxels and undeclared label values are found, not only header faults.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rog.data.dataset import Case, Dataset, DatasetError, load_dataset
from rog.data.io import VolumeError, read_image, read_label

MIN_EXTENT = 8


@dataclass(frozen=True)
class Problem:
    case: str  # case name, or "dataset" for dataset-level problems
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.case}: {self.file}: {self.message}"


def check_dataset(path: str | Path, progress: bool = False) -> list[Problem]:
    """Return every problem found in the dataset at `path` (empty list: the dataset is sound)."""
    try:
        ds = load_dataset(path, strict=False)
    except DatasetError as e:
        return [Problem("dataset", str(Path(path) / "dataset.json"), str(e))]
    problems = [Problem("dataset", str(ds.root / "dataset.json"), p) for p in ds.problems]
    cases = [(c, True) for c in ds.training] + [(c, c.label is not None) for c in ds.test]
    for case, labelled in tqdm(cases, desc="check", disable=not progress):
        problems += _check_case(ds, case, labelled)
    return problems


def _check_case(ds: Dataset, case: Case, labelled: bool) -> list[Problem]:
    out: list[Problem] = []
    img_file = str(case.images[0])

    def add(file, msg):
        out.append(Problem(case.name, str(file), msg))

    try:
        image, geom = read_image(case.images)
    except VolumeError as e:
        add(e.path, e.reason)
        image = geom = None
    if image is not None:
        if image.shape[0] != ds.num_channels:
            add(img_file, f"{image.shape[0]} channel(s), dataset.json declares {ds.num_channels}")
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            add(img_file, f"{bad} NaN/Inf voxel(s)")
        small = [a for a, n in enumerate(geom.shape) if n < MIN_EXTENT]
        if small:
            add(img_file, f"shape {geom.shape} is smaller than {MIN_EXTENT} voxels on axis {small}")
    if not labelled or case.label is None:
        return out
    try:
        label, lgeom = read_label(case.label)
    except VolumeError as e:
        add(e.path, e.reason)
        return out
    undeclared = sorted(set(np.unique(label).tolist()) - set(ds.labels))
    if undeclared:
        add(case.label, f"label values {undeclared} not declared in dataset.json labels {sorted(ds.labels)}")
    if geom is not None:
        if lgeom.shape != geom.shape:
            add(case.label, f"label shape {lgeom.shape} differs from image shape {geom.shape}")
        elif not lgeom.same_grid(geom):
            add(case.label, "label affine differs from the image affine")
    return out
