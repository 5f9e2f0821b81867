"""Preprocessing: crop to the non-zero region, resample to the target spacing, normalise, cache.

Each case becomes `NAME.npy` (image `[C, X, Y, Z]` float32), `NAME_seg.npy` (labels `[X, Y, Z]`
int8) and `NAME.json` (geometry and the parameters needed to invert the chain). The JSON is
written last and atomically: a case counts as done only when its JSON exists, so a killed run
never leaves a half-written case that a later run would take as finished.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from rog.atomic import save_npy, write_json
from rog.data import formats
from rog.data.dataset import Case, Dataset
from rog.data.fingerprint import nonzero_bbox
from rog.data.io import Geometry, canonical_axes
from rog.data.validate import read_case
from rog.errors import read_arrays, read_json_object
from rog.messages import log
from rog.plan import Plan, PlanError
from rog.pool import worker_pool
from rog.progress import progress_bar

ANISOTROPY_RATIO = 3.0  # as nnU-Net: treat the coarsest axis separately beyond this ratio


def through_plane_axis(*spacings) -> int | None:
    """Axis to resample separately (nearest) when any spacing is anisotropic, else None."""
    for s in spacings:
        s = np.asarray(s, dtype=float)
        if s.max() / s.min() > ANISOTROPY_RATIO:
            return int(np.argmax(s))
    return None


def resample(data: np.ndarray, new_shape, order: int, axis: int | None = None) -> np.ndarray:
    """Resample `[C, X, Y, Z]` to `[C, *new_shape]` with spline `order` (pixel-area aligned).

    With `axis` (anisotropic data) that axis is resampled with nearest neighbour after the
    in-plane interpolation, as nnU-Net does, so slices are not blended across a large gap.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data.copy()
    out = []
    for ch in data:
        factors = np.array(new_shape) / np.array(ch.shape)
        if axis is not None and order > 0:
            # slice by slice in-plane: a 3-D zoom with factor 1 through-plane gives the same
            # values (the spline interpolates its nodes) but also filters along that axis
            inplane = np.delete(factors, axis)
            ch = np.stack([ndimage.zoom(sl, inplane, order=order, mode="nearest", grid_mode=True)
                           for sl in np.moveaxis(ch, axis, 0)], axis=axis)
            through = np.ones(3)
            through[axis] = factors[axis]
            ch = ndimage.zoom(ch, through, order=0, mode="nearest", grid_mode=True)
        else:
            ch = ndimage.zoom(ch, factors, order=order, mode="nearest", grid_mode=True)
        out.append(ch)
    return np.stack(out)


def normalize(image: np.ndarray, plan: Plan) -> tuple[np.ndarray, list[list[float]]]:
    """Normalise `[C, X, Y, Z]` per channel as the plan says (CT: clip + dataset z-score;
    otherwise per-image z-score over the channel's non-zero voxels). Returns (the normalised
    image float32, each channel's [mean, std] used: `invert_image` undoes it)."""
    out, stats = np.empty_like(image, dtype=np.float32), []
    for c, norm in enumerate(plan.normalization):
        x = image[c].astype(np.float32)
        if norm["scheme"] == "ct":
            mean, std = float(norm["mean"]), max(float(norm["std"]), 1e-8)
            x = np.clip(x, norm["lower"], norm["upper"])
        else:
            mask = x != 0
            v = x[mask] if mask.any() else x
            mean, std = float(v.mean()), max(float(v.std()), 1e-8)
        out[c] = (x - mean) / std
        stats.append([mean, std])
    return out, stats


def preprocess_arrays(image: np.ndarray, label: np.ndarray | None, geometry: Geometry, plan: Plan):
    """Put the voxel axes in world order (`canonical_axes`), crop, resample and normalise one case.

    Takes image `[C, X, Y, Z]`, optional label `[X, Y, Z]` as stored; returns (image
    `[C, x, y, z]` float32, label `[x, y, z]` int8 or None, properties dict for `invert_*`).
    """
    axes = canonical_axes(geometry)
    image = image.transpose(0, *(a + 1 for a in axes))
    label = label.transpose(axes) if label is not None else None
    bbox = nonzero_bbox(image, label)
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    image = image[(slice(None), *sl)]
    cropped = list(image.shape[1:])
    spacing = np.array(geometry.spacing)[list(axes)]
    target = np.array(plan.target_spacing)
    new_shape = [max(int(round(n * s / t)), 1) for n, s, t in zip(cropped, spacing, target)]
    axis = through_plane_axis(spacing, target)
    image, stats = normalize(resample(image, new_shape, order=3, axis=axis), plan)
    if label is not None:
        label = resample(label[sl][None].astype(np.int16), new_shape, order=0)[0].astype(np.int8)
    props = {"geometry": geometry.to_dict(), "axes": list(axes), "crop_bbox": bbox, "cropped_shape": cropped,
             "resampled_shape": new_shape, "through_plane_axis": axis, "intensity": stats}
    return image, label, props


def resample_linear(volume: np.ndarray, new_shape) -> np.ndarray:
    """Linear resampling of one map `[X, Y, Z]` float32 to `new_shape` (pixel-area aligned,
    edges repeated): scipy's `zoom(order=1, grid_mode=True, mode="nearest")` to 5e-6, with
    torch's multi-threaded trilinear kernel (16x faster on a CT-sized map, docs/benchmarks.md)."""
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(n) for n in new_shape), mode="trilinear", align_corners=False)[0, 0].numpy()


def invert_to_label(class_maps: Iterable[np.ndarray], props: dict) -> np.ndarray:
    """Label map `[X, Y, Z]` uint8 on the original grid (the file's voxel order) from per-class
    scores on the preprocessed grid (`[x, y, z]` each, class 0 first): each map is resampled
    linearly to the cropped region and the running argmax kept (ties to the lower class, as
    argmax), so peak memory is about two full-resolution maps whatever the number of classes.
    Outside the cropped region: background. Returned in Fortran order, as NIfTI stores voxels,
    so that writing it needs no transposing copy (made here by torch, twice as fast as numpy)."""
    best = label = None
    for k, scores in enumerate(class_maps):
        m = resample_linear(scores, props["cropped_shape"])
        if best is None:
            best, label = m, np.zeros(m.shape, np.uint8)
            continue
        better = m > best
        label[better] = k
        np.maximum(best, m, out=best)
    return _in_file(label, props, 0)


def _in_file(cropped: np.ndarray, props: dict, outside) -> np.ndarray:
    """A map on the cropped region of the canonical grid placed in the original grid (`outside`
    elsewhere) and returned in the file's voxel order, Fortran-ordered as NIfTI stores voxels
    (so that writing it needs no transposing copy; made here by torch, twice as fast as numpy)."""
    geom = Geometry.from_dict(props["geometry"])
    axes = props.get("axes", [0, 1, 2])  # cases preprocessed before axes were recorded: as stored
    out = np.full([geom.shape[a] for a in axes], outside, cropped.dtype)
    out[tuple(slice(lo, hi) for lo, hi in props["crop_bbox"])] = cropped
    in_file_order = torch.from_numpy(out).permute(*(int(a) for a in np.argsort(axes)))
    return in_file_order.permute(2, 1, 0).contiguous().numpy().transpose(2, 1, 0)


def invert_image(image: np.ndarray, props: dict) -> np.ndarray:
    """An image `[C, x, y, z]` on the preprocessed grid (normalised) back in the original
    grid's intensities and voxel order, `[C, X, Y, Z]` float32: each channel un-normalised
    with the [mean, std] its preprocessing used and resampled linearly; outside the cropped
    region 0 (the crop removed only zeros). A CT's clipped intensities stay clipped."""
    if "intensity" not in props:
        raise PlanError("the case was preprocessed before its intensities were recorded; preprocess it again")
    return np.stack([_in_file(resample_linear(ch * std + mean, props["cropped_shape"]), props, np.float32(0))
                     for ch, (mean, std) in zip(np.asarray(image, np.float32), props["intensity"])])


def resampled(props: dict) -> bool:
    """Whether preprocessing resampled the case (else the model's grid is the scan's, up to
    the order of the axes and the crop, and every input maps back voxel for voxel)."""
    return list(props["resampled_shape"]) != list(props["cropped_shape"])


def invert_change(delta: np.ndarray, props: dict) -> np.ndarray:
    """A change `[C, x, y, z]` of the model input back on the original grid, `[C, X, Y, Z]`
    float32 in the scan's intensity units: times each channel's std, resampled linearly (a
    convex combination: no voxel's change grows), 0 outside the crop."""
    return np.stack([_in_file(resample_linear(ch * std, props["cropped_shape"]), props, np.float32(0))
                     for ch, (_, std) in zip(np.asarray(delta, np.float32), props["intensity"])])


def scan_preimage(x: np.ndarray, x0: np.ndarray, scan: np.ndarray, props: dict) -> np.ndarray:
    """The scan `[C, X, Y, Z]` whose preprocessing is the model input `x` `[C, x, y, z]`, for a
    case preprocessing did not resample (`resampled`): `scan` where x equals the clean input
    `x0`, elsewhere the voxel's own un-normalised value, mean + std x (inside a CT window that
    is the scan plus std times the change; a voxel clipped by the window gets the value in it
    that the model saw)."""
    axes = props.get("axes", [0, 1, 2])
    out = np.array(scan, np.float32).transpose(0, *(int(a) + 1 for a in axes))  # canonical order, a copy
    region = out[(slice(None), *(slice(lo, hi) for lo, hi in props["crop_bbox"]))]
    stats = np.asarray(props["intensity"], np.float32)
    moved = np.asarray(x) != np.asarray(x0)
    region[moved] = (stats[:, 0, None, None, None] + stats[:, 1, None, None, None] * np.asarray(x, np.float32))[moved]
    return out.transpose(0, *(int(a) + 1 for a in np.argsort(axes)))


def grid_affine(props: dict) -> np.ndarray:
    """The voxel-to-world affine `[4, 4]` of the preprocessed grid: the scan's, with its axes in
    canonical order, the crop's offset and the resampling's pixel-area aligned scale (voxel n
    of the new grid centred at (n + 0.5) f - 0.5 of the cropped one, f = cropped / resampled)."""
    affine = np.asarray(Geometry.from_dict(props["geometry"]).affine, float)
    perm = np.eye(4)
    perm[:3, :3] = 0
    for k, a in enumerate(props.get("axes", [0, 1, 2])):
        perm[int(a), k] = 1  # canonical axis k is the file's axis a
    f = np.asarray(props["cropped_shape"], float) / np.asarray(props["resampled_shape"], float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = np.asarray([lo for lo, _ in props["crop_bbox"]], float) + 0.5 * f - 0.5
    return affine @ perm @ scale


def invert_probabilities(class_maps: Iterable[np.ndarray], props: dict) -> np.ndarray:
    """Class probabilities `[K, X, Y, Z]` float32 on the original grid (the file's voxel order)
    from per-class maps on the preprocessed grid (`[x, y, z]` each, class 0 first), each
    resampled as `invert_to_label` does; outside the cropped region background has probability
    1. Their argmax is `invert_to_label`'s label map; memory: K full-resolution maps."""
    return np.stack([_in_file(resample_linear(m, props["cropped_shape"]), props, float(k == 0))
                     for k, m in enumerate(class_maps)])


def invert_label(label: np.ndarray, props: dict, num_classes: int) -> np.ndarray:
    """Map a label map `[x, y, z]` on the preprocessed grid back to `[X, Y, Z]` on the original
    grid (linear resampling of its one-hot encoding, then argmax, as nnU-Net does)."""
    return invert_to_label(((label == k).astype(np.float32) for k in range(num_classes)), props)


def case_done(out_dir: Path, name: str) -> bool:
    return (out_dir / f"{name}.json").is_file()


def case_props(out_dir: str | Path, name: str) -> dict:
    """A preprocessed case's properties (NAME.json: geometry, crop, intensities, split, plan)."""
    return read_json_object(Path(out_dir) / f"{name}.json")


def plan_mismatch(props: dict, plan: Plan) -> str | None:
    """How a preprocessed case (its `props`) differs from what `plan` makes: the first field
    that differs, "no plan recorded" for cases preprocessed before plans were recorded, or None."""
    made = props.get("preprocessing")
    if made is None:
        return "no plan recorded"
    want = json.loads(json.dumps(plan.preprocessing()))  # as the JSON holds it
    return next((f"{k} {made.get(k)} (the plan: {want[k]})" for k in want if made.get(k) != want[k]), None)


def check_preprocessed(out_dir: str | Path, names: list[str], plan: Plan, where: str) -> None:
    """Refuse (`PlanError`) preprocessed cases that `plan` would not make: a model is never fed
    data shaped by another plan. `where` names the plan (a run's plan.json)."""
    out_dir = Path(out_dir)
    for name in names:
        if case_done(out_dir, name):
            why = plan_mismatch(case_props(out_dir, name), plan)
            if why:
                raise PlanError(f"{out_dir / name}.json: preprocessed under another plan than {where} ({why}); "
                                "run `rog preprocess` again with this plan, or give --data a folder made with it")


def labelled_cases(out_dir: str | Path, split: str = "training") -> list[str]:
    """Names of the preprocessed cases of `split` ("training" or "test") in `out_dir` that
    have a label map, sorted. Test cases never enter training; folders preprocessed before
    the split was recorded held training cases only."""
    out_dir = Path(out_dir)
    names = sorted(p.name[: -len("_seg.npy")] for p in out_dir.glob("*_seg.npy"))
    return [n for n in names if case_done(out_dir, n)
            and case_props(out_dir, n).get("split", "training") == split]


def load_case(out_dir: str | Path, name: str, mmap: bool = True):
    """Load a preprocessed case: (image `[C, x, y, z]`, label `[x, y, z]` or None, props)."""
    out_dir = Path(out_dir)
    props = case_props(out_dir, name)
    mode = "r" if mmap else None
    image = read_arrays(out_dir / f"{name}.npy", mmap_mode=mode)
    seg_path = out_dir / f"{name}_seg.npy"
    label = read_arrays(seg_path, mmap_mode=mode) if seg_path.is_file() else None
    return image, label, props


def _preprocess_one(args: tuple[Dataset, Case, Plan, Path, str]) -> str:
    ds, case, plan, out_dir, split = args
    (out_dir / f"{case.name}.json").unlink(missing_ok=True)  # a case made again is not done until its JSON is back
    image, geom, label = read_case(ds, case)
    image, label, props = preprocess_arrays(image, label, geom, plan)
    props["name"], props["split"], props["preprocessing"] = case.name, split, plan.preprocessing()
    props["format"] = formats.ending(case.images[0])  # volumes written back in it (`rog.bench.volumes`)
    props["source"] = [str(Path(f).resolve()) for f in case.images]  # the scan as stored, for the same
    save_npy(out_dir / f"{case.name}.npy", image)
    if label is not None:
        save_npy(out_dir / f"{case.name}_seg.npy", label)
    write_json(out_dir / f"{case.name}.json", props)  # last: marks the case as done
    return case.name


def preprocess_dataset(ds: Dataset, plan: Plan, out_dir: str | Path, workers: int = 1,
                       progress: bool = True, include_test: bool = False) -> list[str]:
    """Preprocess every training case (and test cases with `include_test`) into `out_dir`,
    skipping cases already done under the same plan (`Plan.preprocessing`); a case made under
    another plan, or before plans were recorded, is made again (said once, with the field).
    Returns the names of the cases processed in this call."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [(c, "training") for c in ds.training] + [(c, "test") for c in (ds.test if include_test else [])]
    stale = {c.name: why for c, _ in cases if case_done(out_dir, c.name)
             and (why := plan_mismatch(case_props(out_dir, c.name), plan))}
    if stale:
        name, why = next(iter(stale.items()))
        log.info(f"preprocessing {len(stale)} case(s) again: made under another plan ({name}: {why})")
    todo = [(ds, c, plan, out_dir, split) for c, split in cases if not case_done(out_dir, c.name) or c.name in stale]
    bar = progress_bar(total=len(todo), desc="preprocess", disable=not progress)
    done = []
    if workers > 1 and len(todo) > 1:
        with worker_pool(workers) as pool:
            for name in pool.map(_preprocess_one, todo):
                done.append(name)
                bar.update()
    else:
        for job in todo:
            done.append(_preprocess_one(job))
            bar.update()
    bar.close()
    return done
