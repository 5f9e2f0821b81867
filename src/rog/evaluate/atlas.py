"""The atlas-transfer reference: what a task's shared space gives away without any learning.

Each training case's label map is carried onto a test case's grid through world coordinates
(nearest neighbour) and the labels vote per voxel; a training case whose field of view does not
reach a voxel abstains there, and a voxel nobody reaches is background. On a task whose cases
share a space (brain templates in MNI space) this scores well with no model at all: a trained
model's clean Dice means something only beside it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from rog.data.dataset import Case
from rog.data.io import read_label, resample_world
from rog.evaluate.metrics import dice_per_class, mean_dice
from rog.results import Score

OUTSIDE = -1  # a training label's value where its field of view ends: no vote


def carried(label: np.ndarray, src: np.ndarray, affine: np.ndarray, shape) -> np.ndarray:
    """A label map `[X', Y', Z']` on the grid `src` carried onto the grid (`affine`, `shape`)
    through world coordinates; `OUTSIDE` where its field of view ends. Returns int16."""
    return resample_world(label.astype(np.int16, copy=False), src, affine, shape, order=0, cval=OUTSIDE)


def vote(maps: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """The per-voxel majority of carried label maps (`OUTSIDE` abstains); ties go to the lower
    class, a voxel nobody reaches is background. Returns int16 like the maps."""
    votes = np.zeros((num_classes, *maps[0].shape), np.int32)
    for moved in maps:
        for k in range(num_classes):
            votes[k] += moved == k
    return votes.argmax(0).astype(np.int16)


def majority_label(labels: Sequence[tuple[np.ndarray, np.ndarray]], affine: np.ndarray, shape,
                   num_classes: int) -> np.ndarray:
    """The per-voxel majority of label maps `(labels [X', Y', Z'], their affine)` resampled
    onto the grid (`affine`, `shape`); ties go to the lower class. Returns int16 `[X, Y, Z]`."""
    return vote([carried(label, src, affine, shape) for label, src in labels], num_classes)


@dataclass
class AtlasReference:
    """The atlas-transfer Dice on the labelled test cases: per case (`Score`), the mean over
    cases and per class (NaN-aware), each training label alone (`single`: training case ->
    mean Dice over the test cases its field of view covers) and the number of training labels."""

    cases: dict
    dice: float | None
    dice_per_class: list | None
    single: dict
    training_cases: int

    def best_single(self) -> str | None:
        """The training case whose label alone scores best (chosen on the test cases)."""
        return max(self.single, key=self.single.get) if self.single else None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "AtlasReference":
        ref = cls(**raw)
        ref.cases = {k: Score(**v) for k, v in ref.cases.items()}
        return ref


def atlas_transfer(training: Sequence[Case], test: Sequence[Case], num_classes: int) -> AtlasReference:
    """Dice of the majority vote of the `training` labels on each labelled `test` case, and of
    each training label alone on the test cases whose labelled voxels its field of view covers
    (at least half of them)."""
    atlases = {c.name: (lab, geo.affine) for c in training if c.label is not None
               for lab, geo in [read_label(c.label)]}
    cases: dict[str, Score] = {}
    single: dict[str, list[float]] = {name: [] for name in atlases}
    for case in test:
        if case.label is None:
            continue
        truth, geo = read_label(case.label)
        maps = {name: carried(label, src, geo.affine, geo.shape) for name, (label, src) in atlases.items()}
        per_class = dice_per_class(vote(list(maps.values()), num_classes), truth, num_classes)
        cases[case.name] = Score(mean_dice(per_class), per_class.tolist())
        for name, moved in maps.items():
            if (moved[truth > 0] != OUTSIDE).mean() >= 0.5:
                single[name].append(mean_dice(dice_per_class(np.maximum(moved, 0), truth, num_classes)))
    per_class = np.array([c.dice_per_class for c in cases.values()], float)
    return AtlasReference(cases, float(np.mean([c.dice for c in cases.values()])) if cases else None,
                          np.nanmean(per_class, 0).tolist() if cases else None,
                          {name: float(np.mean(v)) for name, v in single.items() if v}, len(atlases))
