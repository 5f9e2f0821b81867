"""Predictions of a DICOM series as DICOM-SEG (highdicom): the field's format for a label map,
which a viewer or PACS overlays on its source because it references it. `read_seg` reads one
back as a label map (`rog evaluate` scores SEG predictions).

The SEG object copies the source's patient and study modules (PatientID, PatientName, Study
Instance UID) and its Frame of Reference UID, references every source slice, and names one
segment per foreground class from the dataset's labels. The slices are the series' as rog's
reader orders them (GDCM's sort by position), so frame k of the label map is source slice k.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rog.atomic import atomic_path
from rog.data.formats import FormatError, locale_kept, series_files
from rog.data.io import VolumeError

# a label map rog predicts names its classes but not their anatomy in codes: every segment is
# coded as tissue (SNOMED CT 85756007), its label saying what it is
_TISSUE = ("85756007", "SCT", "Tissue")


def write_seg(path: str | Path, label: np.ndarray, series: str | Path, class_names: list[str]) -> None:
    """Write `label` `[X, Y, Z]` (uint, the voxel order `rog.data.formats.read` gives the
    DICOM series folder `series`) as one DICOM-SEG file at `path`, atomically.

    Args:
        path: the .dcm file to write.
        label: class per voxel, 0 background, 1..len(class_names) the foreground classes.
        series: the source DICOM series folder.
        class_names: foreground class names, label 1 first: the segments' labels.

    Raises:
        VolumeError: a source that is not one readable series of the label's grid, naming it.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from rog import __version__ as version
    try:
        with locale_kept():
            files = series_files(Path(series))
        sources = [pydicom.dcmread(str(f)) for f in files]
    except (FormatError, pydicom.errors.InvalidDicomError, OSError) as e:
        raise VolumeError(series, f"not a DICOM series to reference ({e})") from e
    frames = np.ascontiguousarray(np.asarray(label).transpose(2, 1, 0)).astype(np.uint8)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if frames.shape != (len(sources), rows, cols):
        raise VolumeError(series, f"the label's grid {tuple(label.shape)} is not the series' "
                                  f"({cols}, {rows}, {len(sources)})")
    if int(frames.max(initial=0)) > len(class_names):
        raise VolumeError(path, f"label {int(frames.max())} has no class name (classes: {', '.join(class_names)})")
    algorithm = hd.AlgorithmIdentificationSequence(name="rog", version=version,
                                                   family=codes.cid7162.ArtificialIntelligence)
    tissue = hd.sr.CodedConcept(*_TISSUE)
    segments = [hd.seg.SegmentDescription(segment_number=k, segment_label=name[:64], segmented_property_category=tissue,
                                          segmented_property_type=tissue,
                                          algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                          algorithm_identification=algorithm)
                for k, name in enumerate(class_names, start=1)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=_series_number(sources[0]),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="rog", manufacturer_model_name="rog",
        software_versions=version, device_serial_number="none", series_description="rog segmentation",
        omit_empty_frames=False)
    with atomic_path(Path(path)) as tmp:
        seg.save_as(str(tmp))


def read_seg(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read a DICOM-SEG file as one label map, in `rog.data.formats.read`'s voxel order.

    Returns:
        (labels `[X, Y, Z]` uint8, each voxel its segment's number (0 none), X along the rows,
        Z the slices in the order rog's reader gives their source series; DICOM's LPS affine
        `[4, 4]`, which `rog.data.formats.read` turns to RAS; spacing in mm). Raises `FormatError` on a file that is not a DICOM-SEG of one regularly
        spaced volume.
    """
    import highdicom as hd
    import pydicom
    try:
        volume = hd.seg.segread(str(path)).get_volume(combine_segments=True)
    except (pydicom.errors.InvalidDicomError, AttributeError, ValueError, RuntimeError, OSError) as e:
        raise FormatError(f"not a DICOM-SEG of one volume ({e})") from e
    # highdicom's volume is [slices, rows, columns] with its affine on those indices: reversed, the
    # voxel order of every other reader
    data = np.asarray(volume.array).transpose(2, 1, 0).astype(np.uint8)
    lps = np.asarray(volume.affine, dtype=float)[:, [2, 1, 0, 3]]
    # GDCM orders a series' slices along the normal of its rows and columns; highdicom may run the
    # other way, and a prediction must lie on its reference's grid voxel for voxel
    if np.dot(lps[:3, 2], np.cross(lps[:3, 0], lps[:3, 1])) < 0:
        data = data[:, :, ::-1]
        lps[:3, 3] += lps[:3, 2] * (data.shape[2] - 1)
        lps[:3, 2] *= -1
    spacing = tuple(float(v) for v in np.linalg.norm(lps[:3, :3], axis=0))
    return data, lps, spacing


def _series_number(source) -> int:
    """A series number beside the source's (its own + 1000, or 1000)."""
    return int(getattr(source, "SeriesNumber", 0) or 0) + 1000
