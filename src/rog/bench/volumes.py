"""What broke a model, as images a viewer opens over the scan (`--save-volumes`): under the
results folder, volumes/CASE/: `clean` (the scan as stored), `TAG` (the attacked or corrupted
scan), `TAG_delta` (its difference from the clean scan, in the scan's intensities), and the
predictions on each (`pred_clean`, `pred_TAG`, label maps). TAG is `eps8.0` (the worst attack
at that eps) or `noise_s3`. An attacked patch is written as its whole case with the patch put
back, predicted whole. Each is written in the scan's own file format (NIfTI for a DICOM
series, which holds no floats, and for cases preprocessed before the format was recorded).

`VolumeWriter` writes rog's preprocessed cases. Where preprocessing did not resample the case,
the model's input maps back voxel for voxel and `TAG` is exactly the scan whose preprocessing
is the attacked input (`rog.data.preprocess.scan_preimage`). Where it resampled, no exact map
exists: `TAG` is the scan plus the change resampled back (for viewing over the scan; linear,
so no voxel's change grows), and the exact inputs are written on the model's own grid, in its
input units, as `grid_clean`, `grid_TAG` and `grid_TAG_delta` (NIfTI, the grid's affine).
Cases preprocessed before the source scan was recorded write the clean input inverted as
`clean` (clipped to a CT window, resampled twice). `ScanWriter` writes cases that are the
scans as stored (another tool's or a user's model), through the model's own `save_volume`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rog.data.io import Geometry, VolumeError, read_image, write_label, write_volume
from rog.data.preprocess import (grid_affine, invert_change, invert_image, invert_to_label, load_case, resampled,
                                 scan_preimage)
from rog.data.sampling import centred_origin, paste
from rog.rundir import ResultsDir


class _Writer:
    """What both writers share: the clean input of the case being written is kept, so every
    other input also gets its difference from it (`TAG_delta`)."""

    def __init__(self, results: ResultsDir):
        self.results = results
        self._case: str | None = None  # cases come one after another: the one being written
        self._clean: np.ndarray | None = None

    def has_clean(self, case: str) -> bool:
        return self._case == case and self._clean is not None

    def _images(self, case: str, tag: str, image: np.ndarray) -> None:
        """`image` `[C, ...]` as TAG and, unless it is the clean one, TAG_delta."""
        if tag == "clean":
            self._clean = image
        self._image(case, tag, image)
        if tag != "clean":
            self._image(case, f"{tag}_delta", image - self._clean)

    def _image(self, case: str, name: str, image: np.ndarray) -> None:
        raise NotImplementedError


class ScanWriter(_Writer):
    """Writes cases that are the scans as stored (x and the logits on the scan's grid) through
    `model.save_volume` (`rog.external.ExternalModel`), in the scan's geometry and format."""

    def __init__(self, results: ResultsDir, model):
        super().__init__(results)
        self.model = model

    def write(self, case: str, tag: str, x: torch.Tensor, logits: torch.Tensor) -> None:
        """x `[1, C, ...]` (the scan, perturbed) and its logits `[1, K, ...]` as TAG and pred_TAG."""
        if self._case != case:
            self._case, self._clean = case, None
        self._images(case, tag, x[0].detach().cpu().numpy())
        self.model.save_volume(case, self._path(case, f"pred_{tag}"), logits[0].argmax(0).cpu().numpy(), label=True)

    def _path(self, case: str, name: str) -> Path:
        return self.results.volume(case, name, self.model.volume_ending(case))

    def _image(self, case: str, name: str, image: np.ndarray) -> None:
        self.model.save_volume(case, self._path(case, name), image, label=False)


class VolumeWriter(_Writer):
    """Writes cases of the preprocessed folder `data_dir` into `results`' volumes/."""

    def __init__(self, results: ResultsDir, data_dir: str | Path):
        super().__init__(results)
        self.data_dir = Path(data_dir)

    def _load(self, case: str) -> None:
        if self._case != case:
            self._case, self._clean, self._x0 = case, None, None
            self._image_pre, self._label, self._props = load_case(self.data_dir, case)
            self._geometry = Geometry.from_dict(self._props["geometry"])
            self._scan = stored_scan(self._props)

    def placed(self, case: str, patch: torch.Tensor, size) -> torch.Tensor:
        """The whole preprocessed case `[1, C, ...]` with `patch` `[1, C, *size]` (its
        label-centred patch, `data.sampling.centred_patch`) put back where it was taken."""
        self._load(case)
        whole = paste(np.asarray(self._image_pre, np.float32), patch[0].detach().cpu().numpy(),
                      centred_origin(self._label, size))
        return torch.from_numpy(whole)[None].to(patch.device)

    def write(self, case: str, tag: str, x: torch.Tensor, logits: torch.Tensor) -> None:
        """x `[1, C, ...]` (the model's input on the preprocessed grid) and its logits
        `[1, K, ...]` as TAG and pred_TAG; with TAG "clean" first, every other TAG also gets
        TAG_delta."""
        self._load(case)
        x, props = x[0].detach().cpu().numpy(), self._props
        if tag == "clean":
            self._x0 = x
            scan = self._scan if self._scan is not None else invert_image(x, props)  # [C, X, Y, Z]
        elif self._scan is not None and not resampled(props):
            scan = scan_preimage(x, self._x0, self._scan, props)
        else:
            scan = self._clean + invert_change(x - self._x0, props)
        self._images(case, tag, scan)
        if resampled(props):  # the exact inputs, on the model's grid
            affine = grid_affine(props)
            for name, image in [(f"grid_{tag}", x)] + ([] if tag == "clean" else [(f"grid_{tag}_delta", x - self._x0)]):
                write_image(self.results.volume(case, name, ".nii.gz"), image,
                            Geometry.of(affine, x.shape[1:], np.linalg.norm(affine[:3, :3], axis=0)))
        probs = torch.softmax(logits[0].detach().float(), 0).cpu().numpy()
        write_label(self._path(case, f"pred_{tag}"), invert_to_label(probs, self._props), self._geometry)

    def _path(self, case: str, name: str) -> Path:
        ending = self._props.get("format") or ".nii.gz"  # None (older cases) or a DICOM series: NIfTI
        return self.results.volume(case, name, ending)

    def _image(self, case: str, name: str, image: np.ndarray) -> None:
        write_image(self._path(case, name), image, self._geometry)


def stored_scan(props: dict) -> np.ndarray | None:
    """The scan a preprocessed case was made from, `[C, X, Y, Z]` as stored, or None where the
    case does not name it (preprocessed before it was recorded) or it cannot be read."""
    if not props.get("source"):
        return None
    try:
        return read_image([Path(f) for f in props["source"]])[0]
    except VolumeError:
        return None


def write_image(path: Path, image: np.ndarray, geometry: Geometry) -> None:
    """`image` `[C, X, Y, Z]` (voxels in the file's order) on `geometry`'s grid, atomically; a
    4D file keeps its channels last."""
    data = image[0] if len(image) == 1 else np.moveaxis(image, 0, -1)
    write_volume(path, data, np.asarray(geometry.affine), geometry.spacing)
