"""Read and write volumes with their geometry (affine, spacing, orientation) in any format
`rog.data.formats` reads (NIfTI, NRRD, MetaImage, GIPL, DICOM series).

Arrays are read in the file's own voxel order, channel first: images are `[C, X, Y, Z]`
float32, label maps `[X, Y, Z]` integers, and predictions are written on the case's own grid.
Preprocessing puts the voxel axes in the order of the world axes they run along
(`canonical_axes`) and undoes it exactly on the way back, so the same image gets the same
prediction however its array is stored (as nnU-Net's transpose); directions are kept.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from rog.data import formats
from rog.errors import RogError


class VolumeError(RogError):
    """A volume file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # rebuilt from (path, reason) when a worker process raises it
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in the world: 4x4 affine, spatial shape, spacing in mm, axis codes."""

    affine: tuple[tuple[float, ...], ...]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    orientation: str

    @classmethod
    def of(cls, affine: np.ndarray, shape, spacing) -> "Geometry":
        """From a RAS affine `[4, 4]`, the spatial shape and the spacing in mm."""
        affine = np.asarray(affine, dtype=float)
        return cls(
            affine=tuple(tuple(float(v) for v in row) for row in affine),
            shape=tuple(int(s) for s in shape[:3]),
            spacing=tuple(float(s) for s in spacing[:3]),
            orientation="".join(nib.aff2axcodes(affine)),
        )

    def to_dict(self) -> dict:
        return {k: list(map(list, v)) if k == "affine" else (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(affine=tuple(tuple(float(v) for v in row) for row in d["affine"]),
                   shape=tuple(int(s) for s in d["shape"]),
                   spacing=tuple(float(s) for s in d["spacing"]),
                   orientation=str(d["orientation"]))

    def same_grid(self, other: "Geometry", atol: float = 1e-3) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)


def canonical_axes(geometry: Geometry) -> tuple[int, int, int]:
    """The voxel axes of `geometry` ordered by the world axis (x, y, z) each runs closest to:
    `array.transpose(axes)` stores a z-first volume in the usual order; identity for most files."""
    world = nib.orientations.io_orientation(np.asarray(geometry.affine))[:, 0]
    return tuple(int(a) for a in np.argsort(world))


def _read(path: Path, dtype) -> tuple[np.ndarray, Geometry]:
    """Voxels channel-last and the geometry of one image file or DICOM folder."""
    if not path.exists():
        raise VolumeError(path, "file not found")
    try:
        data, affine, spacing = formats.read(path, dtype)
    except formats.FormatError as e:
        raise VolumeError(path, str(e)) from e
    return data, Geometry.of(affine, data.shape, spacing)


def read_image(paths: Sequence[str | Path]) -> tuple[np.ndarray, Geometry]:
    """Read one image as `[C, X, Y, Z]` float32 (any memory layout).

    `paths` is either one 3D/4D file (MSD v1: 4D is channel-last) or one 3D file per channel
    (nnU-Net v2). All channel files must share one grid.
    """
    channels: list[np.ndarray] = []
    geometry: Geometry | None = None
    for p in map(Path, paths):
        data, g = _read(p, np.float32)
        if data.ndim == 3:
            data = data[None]
        elif data.ndim == 4:
            data = np.moveaxis(data, -1, 0)
        else:
            raise VolumeError(p, f"expected a 3D or 4D image, got shape {data.shape}")
        if geometry is not None and not geometry.same_grid(g):
            raise VolumeError(p, f"channel grid differs from {paths[0]}")
        geometry = geometry or g
        channels.append(data)
    if geometry is None:
        raise VolumeError("<none>", "no image file given")
    # in the file's (Fortran) memory order: a C-order copy of a CT would cost more than reading it
    return (channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)), geometry


def read_label(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a label map as `[X, Y, Z]` int16 with its geometry; non-integer values are an error."""
    path = Path(path)
    data, geometry = _read(path, np.float64)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(path, f"expected a 3D label map, got shape {data.shape}")
    if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
        raise VolumeError(path, "label map holds non-integer values")
    return data.astype(np.int16), geometry


def write_label(path: str | Path, label: np.ndarray, geometry: Geometry) -> None:
    """Write `[X, Y, Z]` labels as uint8 on `geometry`'s grid, atomically, in the format that
    `path`'s ending names (none: a DICOM series folder)."""
    if tuple(label.shape) != tuple(geometry.shape):
        raise VolumeError(path, f"label shape {label.shape} does not match grid {geometry.shape}")
    write_volume(path, np.asarray(label, dtype=np.uint8), np.asarray(geometry.affine), geometry.spacing)


def write_volume(path: str | Path, data: np.ndarray, affine: np.ndarray, spacing=None) -> None:
    """Write an array (3D, or 4D channel-last) with the RAS `affine`, atomically, in the format
    that `path`'s ending names."""
    try:
        formats.write(path, data, affine, spacing)
    except formats.FormatError as e:
        raise VolumeError(path, str(e)) from e


def resample_world(data: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, shape, order: int = 0,
                     cval: float = 0) -> np.ndarray:
    """`data` `[X, Y, Z]` on the voxel grid `src_affine`, sampled on the grid (`dst_affine`,
    `shape`) through world coordinates: nearest neighbour for order 0 (exact on a shared
    lattice, for label maps), spline of `order` otherwise; `cval` outside `data`."""
    m = np.linalg.solve(src_affine, dst_affine)
    return ndimage.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=tuple(shape), order=order,
                                    mode="constant", cval=cval)
