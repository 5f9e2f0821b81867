"""Image file formats: NIfTI through nibabel; NRRD, MetaImage, GIPL and DICOM series through
SimpleITK (a TorchIO dependency), each with its exact geometry.

Every reader returns the voxels in the file's own order, channel last (`[X, Y, Z]` or
`[X, Y, Z, C]`), and a 4x4 voxel-to-world affine in nibabel's RAS+ convention. ITK's world is
LPS+: the two differ by the sign of the first two world axes, converted here and nowhere else.
A DICOM series is a folder of slice files; rog treats the folder as the case's one "file". A
DICOM-SEG file (`rog.data.dicom_seg`) reads as a label map.
"""
from __future__ import annotations

import gzip
import locale
import os
import shutil
import tempfile
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from rog.atomic import atomic_path
from rog.errors import RogError

NIFTI = (".nii.gz", ".nii")
ITK = (".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
ENDINGS = NIFTI + ITK
DICOM = ""  # the "ending" of a DICOM series folder
SEG = ".dcm"  # a DICOM-SEG label map: read (`rog evaluate`), written only beside its series (`rog.data.dicom_seg`)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse


class FormatError(RogError):
    """A file that cannot be read or written in its format (the caller names the file)."""


_CATEGORIES = (locale.LC_CTYPE, locale.LC_NUMERIC, locale.LC_COLLATE, locale.LC_TIME, locale.LC_MONETARY,
               locale.LC_MESSAGES)


@contextmanager
def locale_kept():
    """GDCM (SimpleITK's DICOM IO) sets the process's C locale and leaves it: Python's default
    text encoding then becomes ASCII for the rest of the process (a report or a subprocess's
    output with one non-ASCII character fails). Each ITK call runs inside this, which puts
    every category back."""
    saved = [(c, locale.setlocale(c)) for c in _CATEGORIES]
    try:
        yield
    finally:
        for c, value in saved:
            locale.setlocale(c, value)


def ending(path: str | Path) -> str | None:
    """The supported ending of `path` ('.nii.gz', '.mha', ...), `DICOM` for a folder holding a
    DICOM series, None for anything else (hidden files included)."""
    path = Path(path)
    if path.name.startswith("."):
        return None
    if path.is_dir():
        with locale_kept():
            return DICOM if sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)) else None
    return next((e for e in ENDINGS if path.name.lower().endswith(e)), None)


def stem(path: str | Path) -> str:
    """`path`'s name without its image ending ('case.nii.gz' -> 'case'; a DICOM folder's name)."""
    name = Path(path).name
    end = next((e for e in ENDINGS if name.lower().endswith(e)), "")
    return name[: len(name) - len(end)] if end else name


def images_in(folder: str | Path) -> dict[str, Path]:
    """{name without ending: path} of every image file and DICOM series folder in `folder`,
    sorted by name (a file of another kind, or hidden, is not listed)."""
    return {stem(f): f for f in sorted(Path(folder).iterdir()) if ending(f) is not None}


def series_files(folder: Path) -> list[Path]:
    """The slice files of the one DICOM series in `folder`, in the order GDCM sorts them (by
    position: the third voxel axis of `read`). Call under `locale_kept`."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) != 1:
        raise FormatError(f"{len(series)} DICOM series in the folder, expected one")
    return [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])]


def read(path: str | Path, dtype=np.float32) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read an image file, DICOM folder or DICOM-SEG file.

    Returns:
        (voxels `[X, Y, Z]` or `[X, Y, Z, C]` as `dtype`, in any memory layout; RAS affine
        `[4, 4]`; spacing in mm). Raises `FormatError` on a file of another kind, a folder
        without exactly one DICOM series, or unreadable data.
    """
    path = Path(path)
    if path.name.lower().endswith(NIFTI):
        return _read_nifti(path, dtype)
    if path.name.lower().endswith(SEG) and path.is_file():
        from rog.data.dicom_seg import read_seg  # it writes through this module's series reader
        data, lps, spacing = read_seg(path)
        return data.astype(dtype), _LPS @ lps, spacing
    if not path.is_dir() and ending(path) is None:  # a folder's series are looked for once, below
        raise FormatError(f"not an image rog reads ({', '.join(ENDINGS)} or a DICOM series folder)")
    with locale_kept():
        try:
            if path.is_dir():
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames([str(f) for f in series_files(path)])
                img = reader.Execute()
            else:
                img = sitk.ReadImage(str(path))
        except RuntimeError as e:  # ITK's exceptions carry the file and the reason on their last line
            raise FormatError(f"unreadable ({str(e).strip().splitlines()[-1]})") from e
    if img.GetDimension() != 3:
        raise FormatError(f"expected a 3D image, got {img.GetDimension()}D")
    # ITK arrays are [z, y, x(, c)]: reversing the spatial axes gives the file's voxel order
    data = sitk.GetArrayViewFromImage(img)
    data = data.transpose((2, 1, 0, 3) if data.ndim == 4 else (2, 1, 0)).astype(dtype)
    spacing = np.array(img.GetSpacing())
    lps = np.eye(4)
    lps[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * spacing
    lps[:3, 3] = img.GetOrigin()
    return data, _LPS @ lps, tuple(float(s) for s in spacing)


def _read_nifti(path: Path, dtype):
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=dtype)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise FormatError(f"unreadable, truncated or corrupt ({e})") from e
    except Exception as e:  # nibabel raises many types for a bad header
        raise FormatError(f"unreadable ({e})") from e
    return data, np.asarray(img.affine, dtype=float), tuple(float(s) for s in img.header.get_zooms()[:3])


def write(path: str | Path, data: np.ndarray, affine: np.ndarray, spacing=None) -> None:
    """Write `data` (`[X, Y, Z]` or channel-last `[X, Y, Z, C]`) with the RAS `affine` in the
    format `path`'s ending names (no ending: a DICOM series folder, integer data only),
    atomically: a killed process leaves the previous file or the new one."""
    path, affine = Path(path), np.asarray(affine, dtype=float)
    end = next((e for e in ENDINGS if path.name.lower().endswith(e)), None)
    # a name ending like a file type rog does not write (".png", a typo) is refused; a case name
    # with a dot in it ("sub-01.ses-1") is a DICOM folder's name like any other
    if end is None and path.suffix[1:].isalpha() and len(path.suffix) <= 6 and not path.is_dir():
        raise FormatError(f"unknown image file ending {path.suffix!r} (rog writes {', '.join(ENDINGS)} "
                          "or, with no ending, a DICOM series folder)")
    if end in NIFTI:
        img = nib.Nifti1Image(data, affine)
        if spacing is not None:
            # a 4D file's fourth axis is its channels: unit spacing there
            img.header.set_zooms(tuple(spacing)[:min(data.ndim, 3)] + (1.0,) * (data.ndim - 3))
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
        return
    with locale_kept():
        _write_itk(path, _to_itk(data, affine), end)


def _write_itk(path: Path, img: sitk.Image, end: str | None) -> None:
    if end is None:
        _write_dicom(path, img)
    elif end in (".mhd", ".nhdr"):
        _write_detached(path, img)
    else:
        if end.startswith(".gipl") and not np.allclose(img.GetDirection(), np.eye(3).ravel(), atol=1e-6):
            raise FormatError("GIPL stores no orientation and this grid is not axis-aligned in LPS; "
                              "write NIfTI, NRRD or MHA")
        with atomic_path(path) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)


def _write_detached(path: Path, img: sitk.Image) -> None:
    """A header with a separate data file (.mhd + .zraw, .nhdr + .raw.gz): both written under
    their final names in a temporary folder, then moved, the data first, so the header that
    names it appears last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sitk.WriteImage(img, str(tmp / path.name), useCompression=True)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == path.name):
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _to_itk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    vector = data.ndim == 4
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose((2, 1, 0, 3) if vector else (2, 1, 0))),
                                 isVector=vector)
    lps = _LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    img.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return img


def _write_dicom(folder: Path, img: sitk.Image) -> None:
    """One DICOM file per slice along the third voxel axis, positions and orientation in the
    headers (how a series reader recovers the geometry); written to a temporary folder then
    renamed onto `folder`."""
    if not np.issubdtype(sitk.GetArrayViewFromImage(img).dtype, np.integer) or img.GetNumberOfComponentsPerPixel() != 1:
        raise FormatError("a DICOM series holds one integer channel; write floating-point volumes as NIfTI")
    d = img.GetDirection()
    shared = {"0008|0008": "DERIVED\\SECONDARY", "0008|0060": "OT", "0008|103e": "rog",
              "0020|000d": f"2.25.{uuid.uuid4().int}", "0020|000e": f"2.25.{uuid.uuid4().int}",
              "0020|0052": f"2.25.{uuid.uuid4().int}",
              "0020|0037": "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
              # row spacing then column spacing, and the slice thickness: what a DICOM-SEG (and
              # a viewer measuring in mm) reads off each slice
              "0028|0030": f"{img.GetSpacing()[1]:.10g}\\{img.GetSpacing()[0]:.10g}",
              "0018|0050": f"{img.GetSpacing()[2]:.10g}"}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(img.GetDepth()):
            # a one-slice 3D piece, not a 2D slice: written from a 2D image, a series whose slices
            # run against their normal said "1 mm between slices", and a DICOM-SEG of it was irregular
            piece = img[:, :, k:k + 1]
            for tag, value in shared.items():
                piece.SetMetaData(tag, value)
            piece.SetMetaData("0008|0018", f"2.25.{uuid.uuid4().int}")
            piece.SetMetaData("0020|0013", str(k + 1))
            piece.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
            writer.SetFileName(str(tmp / f"{k + 1:04d}.dcm"))
            writer.Execute(piece)
        old = None
        if folder.exists():  # moved aside, not deleted, until the new series is in place
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
