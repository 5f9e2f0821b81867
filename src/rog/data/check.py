"""`rog check`: list every problem of a dataset folder at once.

Each problem names the case and the file. Voxel data is fully read, so truncated archives,
NaN/Inf voxels and undeclared label values are found, not only header faults. The rules are
`rog.data.validate`'s, which every other stage applies to the cases it reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from rog.data.dataset import Case, Dataset, DatasetError, load_dataset
from rog.data.io import VolumeError, read_image, read_label
from rog.data.validate import image_problems, label_problems
from rog.progress import progress_bar


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
    for case, labelled in progress_bar(cases, desc="check", disable=not progress):
        problems += _check_case(ds, case, labelled)
    return problems


def _check_case(ds: Dataset, case: Case, labelled: bool) -> list[Problem]:
    out: list[Problem] = []
    img_file = str(case.images[0])
    try:
        image, geom = read_image(case.images)
    except VolumeError as e:
        out.append(Problem(case.name, e.path, e.reason))
        image = geom = None
    if image is not None:
        out += [Problem(case.name, img_file, p) for p in image_problems(image, geom, ds.num_channels)]
    if not labelled or case.label is None:
        return out
    try:
        label, lgeom = read_label(case.label)
    except VolumeError as e:
        return out + [Problem(case.name, e.path, e.reason)]
    return out + [Problem(case.name, str(case.label), p) for p in label_problems(label, lgeom, geom, ds.label_values)]
