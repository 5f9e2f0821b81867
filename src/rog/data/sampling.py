"""Patch extraction from preprocessed cases.

`sample_patch` draws a training patch: with probability `fg_prob` centred on a random
foreground voxel of a random class present (foreground oversampling), otherwise anywhere;
volumes smaller than the patch are reflect-padded. `centred_patch` takes the one patch per
case the paper's attack protocol and validation use, centred on the foreground's centre of mass.
"""
from __future__ import annotations

import numpy as np


def _pad_to(image: np.ndarray, label: np.ndarray, size, mode: str):
    """Pad both to at least `size`: the image with `mode`, the label with `mode` when it is
    "reflect" (the training recipe: image and label mirrored together), else background."""
    pads = [max(p - s, 0) for p, s in zip(size, label.shape)]
    if not any(pads):
        return image, label, np.zeros(3, int)
    widths = [(p // 2, p - p // 2) for p in pads]
    image = np.pad(image, [(0, 0), *widths], mode=mode)
    label = np.pad(label, widths, mode="reflect") if mode == "reflect" else np.pad(label, widths)
    return image, label, np.array([w[0] for w in widths])


def _starts(centre, size, shape) -> list[int]:
    """Start of a `size` window around `centre`, kept inside `shape`."""
    return [int(np.clip(round(c - p / 2), 0, s - p)) for c, p, s in zip(centre, size, shape)]


def _crop(image, label, centre, size):
    sl = tuple(slice(s, s + p) for s, p in zip(_starts(centre, size, label.shape), size))
    return image[(slice(None), *sl)], label[sl]


def _foreground_centre(label: np.ndarray) -> np.ndarray:
    """The foreground's centre of mass (the volume's centre when there is none)."""
    fg = np.argwhere(label > 0)
    return fg.mean(0) if len(fg) else (np.array(label.shape) - 1) / 2


def centred_patch(image: np.ndarray, label: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Crop image `[C, X, Y, Z]` and label `[X, Y, Z]` to `size`, centred on the label's
    foreground centre of mass (the volume's centre when there is none). Where the volume is
    smaller than `size`, the image repeats its border voxels and the label is background:
    zero padding would insert the normalised mean intensity, which looks like tissue."""
    image, label, _ = _pad_to(np.asarray(image), np.asarray(label), size, "edge")
    return _crop(image, label, _foreground_centre(label), size)


def centred_origin(label: np.ndarray, size) -> np.ndarray:
    """Where `centred_patch`'s patch starts, per axis, in the label's own voxel coordinates
    (negative where the volume is smaller than the patch and was padded)."""
    label = np.asarray(label)
    _, padded, before = _pad_to(label[None], label, size, "edge")  # the label padded as centred_patch pads it
    return np.array(_starts(_foreground_centre(padded), size, padded.shape)) - before


def paste(volume: np.ndarray, patch: np.ndarray, origin) -> np.ndarray:
    """`volume` `[C, X, Y, Z]` with the part of `patch` `[C, x, y, z]` that lies inside it
    written at `origin` (as `centred_origin` gives it); a copy."""
    out = np.array(volume, copy=True)
    inside = [(max(o, 0), min(o + p, s)) for o, p, s in zip(origin, patch.shape[1:], volume.shape[1:])]
    out[(slice(None), *(slice(a, b) for a, b in inside))] = patch[
        (slice(None), *(slice(a - o, b - o) for (a, b), o in zip(inside, origin)))]
    return out


def sample_patch(image: np.ndarray, label: np.ndarray, size, rng: np.random.Generator,
                 fg_prob: float = 0.5, class_voxels: dict[int, np.ndarray] | None = None):
    """Draw a `size` patch from image `[C, X, Y, Z]` and label `[X, Y, Z]`.

    `class_voxels` (class -> `[N, 3]` voxel coordinates) may be passed to avoid searching the
    label each time (see `class_locations`). Returns (image patch, label patch) as arrays.
    """
    image, label, offset = _pad_to(np.asarray(image), np.asarray(label), size, "reflect")
    if rng.random() < fg_prob:
        voxels = class_voxels if class_voxels is not None else class_locations(label)
        present = [k for k, v in voxels.items() if len(v)]
        if present:
            k = present[rng.integers(len(present))]
            centre = voxels[k][rng.integers(len(voxels[k]))] + (offset if class_voxels is not None else 0)
            return _crop(image, label, centre, size)
    centre = [rng.uniform(p / 2, s - p / 2) if s > p else s / 2 for p, s in zip(size, label.shape)]
    return _crop(image, label, centre, size)


def class_locations(label: np.ndarray, max_per_class: int = 10_000, seed: int = 0,
                    ignore: int | None = None) -> dict[int, np.ndarray]:
    """Up to `max_per_class` voxel coordinates `[N, 3]` of each foreground class (not of the
    `ignore` label: foreground oversampling centres patches on what is learnt, as nnU-Net)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in np.unique(label):
        if k <= 0 or k == ignore:
            continue
        idx = np.argwhere(label == k)
        if len(idx) > max_per_class:
            idx = idx[rng.choice(len(idx), max_per_class, replace=False)]
        out[int(k)] = idx
    return out
