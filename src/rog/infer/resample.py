"""Resampling a case as a differentiable torch map, exactly as a tool's numpy code does it:
nnU-Net's `resample_data_or_seg_to_shape` for images and logits (`nnunet_resampling`), and
rog's own preprocessing (`rog.data.preprocess.resample`, scipy's `zoom`; `rog_resampling`).

Every step of both is linear along each axis: skimage's `resize` and scipy's `zoom` (a spline
of the given order, no anti-aliasing) are tensor products of 1-D maps, and so is the
nearest-neighbour step along the low-resolution axis of anisotropic cases. The 1-D maps are
computed by running those same functions on unit vectors, so they are the tool's to rounding
(weights below `TAIL` are dropped: the far tail of the cubic spline's prefilter, which decays
by 0.27 per voxel), and applied as sparse matrices. The one step that is not linear is
skimage's clip of each resized array to its input's range (nnU-Net: per channel, or per slice
where it resizes slice by slice); it is done with torch.minimum/maximum, so the gradient
reaches the extreme voxels too. `tests/test_nnunet_scan.py` and `tests/test_scan.py` check the
maps against the tools' functions on random volumes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

TAIL = 1e-9
SUPPORTED = "resample_data_or_seg_to_shape"


@lru_cache(maxsize=64)
def _line(n_in: int, n_out: int, order: int, engine: str) -> np.ndarray:
    """One axis of `n_in` samples resampled to `n_out` as a matrix `[n_out, n_in]`: skimage's
    `resize` ('edge' mode, no anti-aliasing: nnU-Net), scipy's `zoom` ('nearest' mode, grid
    mode: rog), or nnU-Net's `map_coordinates` along the low-resolution axis ("nnunet-z")."""
    eye = np.eye(n_in)
    if engine == "skimage":
        from skimage.transform import resize
        columns = [resize(e, (n_out,), order, mode="edge", anti_aliasing=False, clip=False) for e in eye]
    elif engine == "zoom":
        from scipy.ndimage import zoom
        columns = [zoom(e, n_out / n_in, order=order, mode="nearest", grid_mode=True) for e in eye]
    else:
        from scipy.ndimage import map_coordinates
        coords = (n_in / n_out * (np.arange(n_out) + 0.5) - 0.5)[None]
        columns = [map_coordinates(e, coords, order=order, mode="nearest") for e in eye]
    return np.stack(columns, 1)


@lru_cache(maxsize=64)
def _operator(n_in: int, n_out: int, order: int, engine: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`_line` as a sparse matrix on `device` (kept: an attack applies the same ones every step)."""
    m = _line(n_in, n_out, order, engine)
    rows, cols = np.nonzero(np.abs(m) > TAIL)
    index = torch.from_numpy(np.stack([rows, cols]))
    values = torch.from_numpy(m[rows, cols])
    return torch.sparse_coo_tensor(index, values, m.shape, check_invariants=False).to(device, dtype).coalesce()


def _apply(x: torch.Tensor, line: tuple, dim: int) -> torch.Tensor:
    """The 1-D map `line` = (n_in, n_out, order, engine) applied along dimension `dim` of x."""
    m = _operator(*line, x.dtype, x.device)
    moved = x.movedim(dim, 0)
    out = torch.sparse.mm(m, moved.reshape(moved.shape[0], -1))
    return out.reshape(m.shape[0], *moved.shape[1:]).movedim(0, dim)


def _clip_to_input(out: torch.Tensor, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """skimage's clip: `out` within the min and max of `x` over `dims` (kept as broadcast dims)."""
    return torch.minimum(torch.maximum(out, x.amin(dims, keepdim=True)), x.amax(dims, keepdim=True))


@dataclass(frozen=True)
class Resampling:
    """One resampling from `shape` to `new`: spline `order` along every axis, or, with `axis`
    set (anisotropic), slice by slice in the other two axes and `order_z` along `axis`.
    `engine` "skimage" (nnU-Net: skimage's clip included, its `map_coordinates` along `axis`)
    or "zoom" (rog: scipy's zoom, no clip). Called on `[B, C, *shape]`, gives `[B, C, *new]`."""

    shape: tuple[int, ...]
    new: tuple[int, ...]
    order: int
    axis: int | None = None
    order_z: int = 0
    engine: str = "skimage"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape == self.new:  # both tools return such data untouched (no clip)
            return x
        plane = [a for a in range(3) if a != self.axis]
        out = x
        for a in plane:
            out = _apply(out, (self.shape[a], self.new[a], self.order, self.engine), 2 + a)
        clip = self.engine == "skimage"
        if self.axis is None:
            return _clip_to_input(out, x, (2, 3, 4)) if clip else out
        if clip:
            out = _clip_to_input(out, x, tuple(2 + a for a in plane))  # resized slice by slice
        a = self.axis
        if self.shape[a] != self.new[a]:
            out = _apply(out, (self.shape[a], self.new[a], self.order_z, "nnunet-z" if clip else "zoom"), 2 + a)
        return out


def nnunet_resampling(function: str, kwargs: dict, shape, new, spacing, new_spacing) -> Resampling:
    """The `Resampling` that nnU-Net's configured `function` (with `kwargs` from plans.json) does
    from `shape` at `spacing` to `new` at `new_spacing` (the anisotropic axis decided by
    nnU-Net's own rule). Raises ValueError for a function or option it does not reproduce."""
    from nnunetv2.preprocessing.resampling.default_resampling import ANISO_THRESHOLD, determine_do_sep_z_and_axis
    if function != SUPPORTED or kwargs.get("is_seg"):
        raise ValueError(f"resampling {function}({kwargs}): only nnU-Net's default {SUPPORTED} of images")
    # a key missing from plans.json takes the default of nnU-Net's function signature: for
    # force_separate_z that is False (no separate z), not None (decided by anisotropy)
    separate, axis = determine_do_sep_z_and_axis(kwargs.get("force_separate_z", False), spacing, new_spacing,
                                                 kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD))
    return Resampling(tuple(int(s) for s in shape), tuple(int(s) for s in new), int(kwargs.get("order", 3)),
                      int(axis) if separate else None, int(kwargs.get("order_z", 0)))
