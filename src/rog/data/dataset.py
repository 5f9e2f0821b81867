"""Read and validate a dataset folder: MSD v1 or nnU-Net v2 `dataset.json`.

MSD v1 cases come from the json's `training`/`test` lists (never from globbing: MSD archives
hold macOS `._*` junk files). nnU-Net v2 cases are the `CASE_0000<file_ending>` files of
`imagesTr`, hidden files ignored, one file per channel.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rog.data import formats
from rog.errors import RogError, read_json_object


class DatasetError(RogError):
    """The dataset folder or its dataset.json is malformed; the message names the file."""


@dataclass(frozen=True)
class Case:
    """One case: its image file(s) (one 4D file, or one file per channel) and optional label."""

    name: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass
class Dataset:
    """A parsed dataset.json. `problems` lists structural faults found while parsing."""

    root: Path
    name: str
    layout: str  # "msd" or "nnunet"
    modalities: list[str]  # one per input channel
    labels: dict[int, str]  # index -> name, background included
    training: list[Case]
    test: list[Case]
    problems: list[str] = field(default_factory=list)
    # nnU-Net v2's "ignore" label (the highest value, = num_classes): voxels no loss or metric counts
    ignore_label: int | None = None

    @property
    def num_channels(self) -> int:
        return len(self.modalities)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def label_values(self) -> list[int]:
        """Every value a label map may hold: the classes and the ignore label."""
        return sorted(self.labels) + ([self.ignore_label] if self.ignore_label is not None else [])


def load_dataset(path: str | Path, strict: bool = True) -> Dataset:
    """Parse `path/dataset.json` (MSD v1 or nnU-Net v2).

    With `strict`, structural problems (paths leaving the folder, no case at all) raise
    `DatasetError`; otherwise they are listed in `Dataset.problems` for `rog check`. A dataset
    of test cases only (evaluation-only) is no problem: only planning needs training cases.
    """
    root = dataset_folder(path).resolve()
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: not found (is {root} a dataset folder?)")
    meta = read_json_object(meta_path, DatasetError)
    if "channel_names" in meta:
        ds = _parse_nnunet(root, meta, meta_path)
    elif "modality" in meta:
        ds = _parse_msd(root, meta, meta_path)
    else:
        raise DatasetError(f"{meta_path}: neither MSD v1 ('modality') nor nnU-Net v2 ('channel_names')")
    if not ds.training and not ds.test:  # test cases alone are an evaluation-only dataset: fine
        ds.problems.append(f"{meta_path}: the training list is empty and there is no test case")
    declared = meta.get("numTraining")
    if isinstance(declared, int) and declared != len(ds.training):
        ds.problems.append(f"{meta_path}: numTraining is {declared} but {len(ds.training)} training case(s) are "
                           f"{'listed' if ds.layout == 'msd' else 'in imagesTr'}")
    for split, cases in (("training", ds.training), ("test", ds.test)):
        names = [c.name for c in cases]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            ds.problems.append(f"{meta_path}: {split} case name(s) {twice[:5]} appear more than once")
    both = sorted({c.name for c in ds.training} & {c.name for c in ds.test})
    if both:  # preprocessed cases are stored by name: one would overwrite the other
        ds.problems.append(f"{meta_path}: case name(s) {both[:5]} in both the training and the test cases")
    if strict and ds.problems:
        raise DatasetError("\n".join(ds.problems))
    return ds


def dataset_folder(path: str | Path) -> Path:
    """`path`, or, where no such folder exists, a dataset id under $nnUNet_raw as nnU-Net
    takes it ('4', 'Dataset004' or 'Dataset004_Hippocampus')."""
    given = Path(path)
    match = re.fullmatch(r"(?:Dataset)?(\d{1,3})(_.+)?", str(path))
    if given.exists() or not match or not os.environ.get("nnUNet_raw"):
        return given
    raw = Path(os.environ["nnUNet_raw"])
    found = sorted(raw.glob(f"Dataset{int(match.group(1)):03d}{match.group(2) or '_*'}"))
    if len(found) != 1:
        raise DatasetError(f"{path}: {'no' if not found else 'more than one'} dataset Dataset"
                           f"{int(match.group(1)):03d}{match.group(2) or '_*'} under $nnUNet_raw ({raw})")
    return found[0]


def _require(meta: dict, key: str, kind: type, meta_path: Path):
    if key not in meta:
        raise DatasetError(f"{meta_path}: missing key {key!r}")
    if not isinstance(meta[key], kind):
        raise DatasetError(f"{meta_path}: {key!r} must be a {kind.__name__}")
    return meta[key]


def _channels(mapping: dict, meta_path: Path, key: str) -> list[str]:
    try:
        idx = sorted(mapping, key=int)
    except ValueError as e:
        raise DatasetError(f"{meta_path}: {key!r} keys must be channel indices") from e
    if [int(i) for i in idx] != list(range(len(idx))) or not idx:
        raise DatasetError(f"{meta_path}: {key!r} must number channels 0..N-1")
    return [str(mapping[i]) for i in idx]


def _check_labels(labels: dict[int, str], meta_path: Path) -> dict[int, str]:
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise DatasetError(f"{meta_path}: labels must be 0..K-1 with K >= 2, got {sorted(labels)}")
    return dict(sorted(labels.items()))


def _inside(root: Path, rel: str, where: str, problems: list[str]) -> Path:
    """`rel` under `root`; a path written to leave it ('../x', '/abs') is a problem. Checked on
    the path as written, not where a symbolic link points: datasets made of links are fine."""
    p = Path(os.path.normpath(root / rel))
    if root != p and root not in p.parents:
        problems.append(f"{where}: path {rel!r} leaves the dataset folder {root}")
    return p


def _test_label(root: Path, name: str, ending: str) -> Path | None:
    """A test case's reference label, where the folder has one (`labelsTs/`): the MSD ships
    none, rog's synthetic tasks and many private datasets do. Used to score and to attack
    held-out cases; never for training."""
    path = root / "labelsTs" / f"{name}{ending}"
    return path if path.is_file() or (not ending and path.is_dir()) else None


def _parse_msd(root: Path, meta: dict, meta_path: Path) -> Dataset:
    modalities = _channels(_require(meta, "modality", dict, meta_path), meta_path, "modality")
    raw_labels = _require(meta, "labels", dict, meta_path)
    try:
        labels = {int(k): str(v) for k, v in raw_labels.items()}
    except ValueError as e:
        raise DatasetError(f"{meta_path}: MSD 'labels' keys must be integers") from e
    labels = _check_labels(labels, meta_path)
    problems: list[str] = []
    training = []
    for i, entry in enumerate(_require(meta, "training", list, meta_path)):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            problems.append(f"{meta_path}: training[{i}] needs 'image' and 'label'")
            continue
        name = formats.stem(entry["image"])
        where = f"case {name}"
        training.append(Case(name, (_inside(root, entry["image"], where, problems),),
                             _inside(root, entry["label"], where, problems)))
    test = []
    for entry in meta.get("test", []) or []:
        rel = entry["image"] if isinstance(entry, dict) else entry
        name = formats.stem(rel)
        ending = Path(rel).name[len(name):]  # the test label is stored as the image is
        test.append(Case(name, (_inside(root, rel, f"case {name}", problems),), _test_label(root, name, ending)))
    return Dataset(root, str(meta.get("name", root.name)), "msd", modalities, labels, training,
                   test, problems)


def _parse_nnunet(root: Path, meta: dict, meta_path: Path) -> Dataset:
    modalities = _channels(_require(meta, "channel_names", dict, meta_path), meta_path,
                           "channel_names")
    raw_labels = dict(_require(meta, "labels", dict, meta_path))
    if any(not isinstance(v, int) for v in raw_labels.values()):
        raise DatasetError(f"{meta_path}: region-based (list) labels are not supported")
    ignore = raw_labels.pop("ignore", None)
    labels = _check_labels({int(v): str(k) for k, v in raw_labels.items()}, meta_path)
    if ignore is not None and ignore != len(labels):
        raise DatasetError(f"{meta_path}: the 'ignore' label must be the highest value ({len(labels)}), got {ignore}")
    ending = str(meta.get("file_ending", ".nii.gz"))
    problems: list[str] = []
    if ending not in formats.ENDINGS:
        problems.append(f"{meta_path}: file_ending {ending!r}: rog reads {', '.join(formats.ENDINGS)}")

    def cases(images_dir: str, labels_dir: str | None) -> list[Case]:
        """The cases of `images_dir` (CASE_XXXX files); files that fit no channel are problems."""
        folder = root / images_dir
        if not folder.is_dir():
            return []
        out, files = [], [f for f in sorted(folder.iterdir()) if not f.name.startswith(".")]
        suffix = f"_0000{ending}"
        for f in files:
            if f.name.endswith(suffix):
                name = f.name[: -len(suffix)]
                images = tuple(folder / f"{name}_{c:04d}{ending}" for c in range(len(modalities)))
                label = root / labels_dir / f"{name}{ending}" if labels_dir else _test_label(root, name, ending)
                out.append(Case(name, images, label))
        expected = {p for c in out for p in c.images}
        for f in files:
            if f in expected:
                continue
            if not f.name.endswith(ending):
                problems.append(f"{f}: file ending not the dataset's file_ending {ending!r}")
            else:
                problems.append(f"{f}: no channel of a case (channels 0000-{len(modalities) - 1:04d}, each case "
                                "needs its _0000 file)")
        return out

    return Dataset(root, str(meta.get("name", root.name)), "nnunet", modalities, labels,
                   cases("imagesTr", "labelsTr"), cases("imagesTs", None), problems, ignore)


def describe(path: str | Path) -> str:
    """One line on the MSD-layout task at `path`: name, case counts, description."""
    meta = read_json_object(Path(path) / "dataset.json", DatasetError)
    return (f"{meta['name']}: {meta['numTraining']} training and {meta.get('numTest', 0)} test cases at {path}"
            + (f" ({meta['description']})" if meta.get("description") else ""))
