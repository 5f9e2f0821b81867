"""Training and validation data from the preprocessed cache.

`TrainPatches` is a map-style dataset whose item i of epoch e is a pure function of
(seed, e, i): which case (one pass over the shuffled training cases per epoch, repeated as
needed), which patch, which augmentation. Sampling is therefore reproducible whatever the
number of worker processes, a resumed run draws exactly the patches it would have drawn,
and distributed ranks take disjoint items (i = rank, rank + world, ...).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rog.attacks.threat import ThreatModel
from rog.corruptions import CORRUPTIONS, corrupt, foreground_sd
from rog.data.preprocess import load_case
from rog.data.sampling import centred_patch, class_locations, sample_patch
from rog.errors import RogError, read_json
from rog.train.augment import augment, build_augmentation


class TrainPatches(Dataset):
    """Item j: (image `[C, *patch]` float32, label `[*patch]` int64, case range `[2, C]`: the
    whole case's per-channel min and max, the benchmark's box, from which adversarial training
    takes its radius); foreground patches are centred on classes, never on `ignore_label`. With
    `corruption_spacing`
    (the voxel spacing in mm) half the augmented patches also get one scanner artefact of
    `rog.corruptions` at a random severity 1-5 (`--augment corruptions`)."""

    def __init__(self, data_dir: str | Path, cases: list[str], crop_size, patch_size, items: int,
                 seed: int = 0, fg_prob: float = 0.5, augment_data: bool = True, rank: int = 0, world: int = 1,
                 corruption_spacing=None, ignore_label: int | None = None):
        self.corruption_spacing, self.ignore_label = corruption_spacing, ignore_label
        self.data_dir, self.cases = Path(data_dir), list(cases)
        self.crop_size, self.patch_size = list(crop_size), list(patch_size)
        self.seed, self.fg_prob, self.augment_data = seed, fg_prob, augment_data
        self.rank, self.world, self.items = rank, world, items
        self.epoch = 0
        self._cache: dict[str, tuple] = {}
        self._transform = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.items, self.world))

    def _case(self, name: str):
        if name not in self._cache:  # per worker process: arrays memory-mapped, locations once
            image, label, _ = load_case(self.data_dir, name)
            # the whole case's per-channel box, as the benchmark's (`[2, C]`: lo, hi)
            lo, hi = ThreatModel.channel_range(torch.tensor(np.asarray(image), dtype=torch.float32)[None])
            span = torch.stack([lo.flatten(), hi.flatten()])
            self._cache[name] = (image, label, class_locations(np.asarray(label), ignore=self.ignore_label), span)
        return self._cache[name]

    def __getitem__(self, j: int):
        i = self.rank + j * self.world
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.cases))
        name = self.cases[order[i % len(self.cases)]]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image, label, locations, span = self._case(name)
        size = self.crop_size if self.augment_data else self.patch_size
        img, lab = sample_patch(image, label, size, rng, self.fg_prob, locations)
        if not self.augment_data:
            return (torch.from_numpy(np.ascontiguousarray(img, np.float32)), torch.from_numpy(lab.astype(np.int64)),
                    span)
        if self._transform is None:
            self._transform = build_augmentation(self.patch_size)
        img, lab = augment(self._transform, img, lab, int(rng.integers(2 ** 31)))
        if self.corruption_spacing is not None and rng.random() < 0.5:  # drawn after: the rest is unchanged
            img = self._corrupt(img, lab, rng)
        return img, lab, span

    def _corrupt(self, img: torch.Tensor, lab: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        names = list(CORRUPTIONS)
        name, severity = names[int(rng.integers(len(names)))], int(rng.integers(1, 6))
        lo, hi = ThreatModel.channel_range(img[None])
        return corrupt(img, name, severity, self.corruption_spacing, lo.flatten(), hi.flatten(),
                       foreground_sd(img, lab), int(rng.integers(2 ** 31)))


def validation_patches(data_dir: str | Path, cases: list[str], patch_size) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One patch per validation case centred on its foreground: [(image `[C, ...]`, label `[...]`)]."""
    out = []
    for name in cases:
        image, label, _ = load_case(data_dir, name, mmap=False)
        img, lab = centred_patch(image, label, patch_size)
        out.append((torch.from_numpy(np.ascontiguousarray(img, np.float32)),
                    torch.from_numpy(np.ascontiguousarray(lab, np.int64))))
    return out


def make_splits(cases: list[str], folds: int = 5, seed: int = 0, holdout: int = 0) -> list[dict[str, list[str]]]:
    """Seeded k-fold splits [{'train': [...], 'val': [...], 'test': [...]}]; k = 5 is the
    paper's 80/20. `holdout` cases are set aside first, in every fold alike, as a test split
    that neither trains the model nor selects its checkpoint (the benchmark's cases where the
    dataset has no labelled test cases); with holdout 0 the folds are as before."""
    order = np.random.default_rng(seed).permutation(len(cases))
    test, rest = order[len(order) - holdout:] if holdout else order[:0], order[: len(order) - holdout]
    chunks = np.array_split(rest, folds)
    return [{"train": sorted(cases[i] for c in chunks[:f] + chunks[f + 1:] for i in c),
             "val": sorted(cases[i] for i in chunks[f]), "test": sorted(cases[i] for i in test)}
            for f in range(folds)]


class SplitError(RogError):
    """A split file that cannot be used: the message names the file and the case or key."""


def read_split(path: str | Path, fold: int, cases: list[str]) -> dict[str, list[str]]:
    """The split in the JSON file `path`: {"train": [...], "val": [...]} (and optionally
    "test"), or nnU-Net's splits_final.json, a list of such per fold (`fold` is taken). Every
    name must be one of `cases` (the labelled preprocessed cases) and train, val and test
    disjoint; anything else is a `SplitError` naming the file."""
    path = Path(path)
    raw = read_json(path, SplitError)
    if isinstance(raw, list):  # nnU-Net's splits_final.json: one split per fold
        if not 0 <= fold < len(raw):
            raise SplitError(f"{path}: no fold {fold} (it lists {len(raw)})")
        raw = raw[fold]
    if not isinstance(raw, dict):
        raise SplitError(f"{path}: expected {{'train': [...], 'val': [...]}} or a list of them per fold")
    unknown = sorted(set(raw) - {"train", "val", "test"})
    if unknown or not raw.get("train") or not raw.get("val"):
        raise SplitError(f"{path}: needs non-empty 'train' and 'val' lists (and optionally 'test')"
                         + (f"; unknown key(s) {unknown}" if unknown else ""))
    split = {k: sorted(str(n) for n in raw.get(k, [])) for k in ("train", "val", "test")}
    missing = sorted(set().union(*split.values()) - set(cases))
    if missing:
        raise SplitError(f"{path}: case(s) {missing[:5]} are not labelled preprocessed training cases")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if set(split[a]) & set(split[b]):
            raise SplitError(f"{path}: case(s) {sorted(set(split[a]) & set(split[b]))[:5]} in both {a} and {b}")
    return split


def holdout_size(labelled: int, labelled_test: int) -> int:
    """Cases to hold out of training: none where the dataset has labelled test cases of its
    own or too few cases to spare one (fewer than 5); else a tenth, at least one."""
    return 0 if labelled_test or labelled < 5 else max(1, labelled // 10)
