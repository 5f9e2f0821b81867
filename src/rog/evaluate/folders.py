"""`rog evaluate REFERENCE PREDICTION`: score a folder of predicted label maps against
references (the reference first, as nnU-Net's `nnUNetv2_evaluate_folder`)."""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np

from rog.atomic import write_json, write_text
from rog.data import formats
from rog.data.dataset import load_dataset
from rog.data.io import VolumeError, read_label
from rog.data.validate import label_problems
from rog.errors import RogError, read_json_object
from rog.evaluate.metrics import case_metrics, scored_sets
from rog.rundir import PredictionsDir

METRICS = ("dice", "hd95", "nsd")
NNUNET_METRICS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")


def nnunet_case(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> dict:
    """nnU-Net's per-case metrics (`nnunetv2.evaluation.evaluate_predictions.compute_metrics`)
    of the label maps pred and ref (one shape): per label, or per region of a `Regions`
    (keyed "1" or "(1, 2)", as nnU-Net's summary.json), Dice, IoU (NaN where neither map has
    it), FP, TP, FN, TN, n_pred, n_ref; reference voxels at the ignore label (>= K) not scored."""
    scored = ref < num_classes
    out = {}
    for labels in scored_sets(num_classes):
        r, p = np.isin(ref, labels) & scored, np.isin(pred, labels) & scored
        tp, fp, fn = int((r & p).sum()), int((~r & p).sum()), int((r & ~p).sum())
        tn = int(scored.sum()) - tp - fp - fn
        none = tp + fp + fn == 0
        key = str(labels) if getattr(num_classes, "members", None) else str(labels[0])
        out[key] = {"Dice": float("nan") if none else 2 * tp / (2 * tp + fp + fn),
                    "IoU": float("nan") if none else tp / (tp + fp + fn),
                    "FP": fp, "TP": tp, "FN": fn, "TN": tn, "n_pred": fp + tp, "n_ref": fn + tp}
    return out


def nnunet_summary(per_case: list[tuple[dict, Path, Path]]) -> dict:
    """nnU-Net's summary.json keys from (`nnunet_case`, prediction file, reference file) per
    case: "metric_per_case", "mean" (per label, the mean over cases where defined) and
    "foreground_mean" (the mean over labels, as nnU-Net takes it)."""
    keys = list(per_case[0][0])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a label no case has: NaN, as nnU-Net's
        mean = {k: {m: float(np.nanmean([c[k][m] for c, _, _ in per_case])) for m in NNUNET_METRICS} for k in keys}
    return {"metric_per_case": [{"metrics": c, "prediction_file": str(p), "reference_file": str(r)}
                                for c, p, r in per_case],
            "mean": mean, "foreground_mean": {m: float(np.mean([mean[k][m] for k in keys])) for m in NNUNET_METRICS}}


def _label_files(folder: Path) -> dict[str, Path]:
    """{case name: label file, DICOM folder or DICOM-SEG file} of every image `rog.data.formats`
    reads: a reference and a prediction pair by case name whatever their formats."""
    if not folder.is_dir():
        raise VolumeError(folder, "folder not found")
    seg = {f.name[: -len(formats.SEG)]: f for f in sorted(folder.glob(f"*{formats.SEG}")) if f.is_file()}
    return {**formats.images_in(folder), **seg}


def class_names(ref_dir: Path, pred_dir: Path, k: int) -> list[str]:
    """Names of the foreground classes 1..k-1: from the plan of the models that made the
    predictions (rog predict's record), else from the dataset.json above the references, else
    "class N"."""
    labels = {}
    record = PredictionsDir(pred_dir).provenance
    try:
        if record.is_file():
            labels = {int(c): n for c, n in read_json_object(record)["plans"][0]["labels"].items()}
        elif (ref_dir.parent / "dataset.json").is_file():
            labels = load_dataset(ref_dir.parent).labels
    except (RogError, KeyError, IndexError, TypeError, ValueError):  # names are a courtesy: none is no error
        labels = {}
    return [str(labels.get(c, f"class {c}")) for c in range(1, k)]


def _ignore_aware_classes(ref_dir: Path) -> int | None:
    """K from the nnU-Net dataset.json above the references when it declares an ignore label
    (its voxels, valued K, are then not scored), else None."""
    try:
        ds = load_dataset(ref_dir.parent) if (ref_dir.parent / "dataset.json").is_file() else None
    except RogError:
        return None
    return ds.num_classes if ds is not None and ds.ignore_label is not None else None


def evaluate_folders(ref_dir: str | Path, pred_dir: str | Path, num_classes: int | None = None,
                     out: str | Path | None = None, tolerance_mm: float = 1.0) -> dict:
    """Per case and class Dice, HD95 and surface Dice for every reference with a prediction of
    the same file name ("cases", "mean_per_class"), beside nnU-Net's summary.json keys
    ("metric_per_case", "mean", "foreground_mean": `nnunet_summary`). Writes `out`.json and
    `out`.csv when `out` is given. A swapped pair is
    refused: rog's predictions folder given as the references, or, without `num_classes`,
    predictions that hold a label no reference has. Reference voxels at the ignore label of the
    nnU-Net dataset.json above the references are not scored."""
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    if PredictionsDir(ref_dir).provenance.is_file():
        raise VolumeError(ref_dir, "holds rog's predictions, not references: the reference folder comes first, "
                          "as in nnU-Net (rog evaluate REFERENCE PREDICTION)")
    preds, refs = _label_files(pred_dir), _label_files(ref_dir)
    if num_classes is None:
        num_classes = _ignore_aware_classes(ref_dir)
    missing = sorted(set(refs) - set(preds))
    pairs = []
    for name in sorted(set(refs) & set(preds)):
        pred, pgeom = read_label(preds[name])
        ref, rgeom = read_label(refs[name])
        problems = label_problems(pred, pgeom, rgeom)
        if problems:
            raise VolumeError(preds[name], f"{problems[0]} (reference {refs[name]})")
        pairs.append((name, pred, ref, rgeom.spacing, preds[name], refs[name]))
    if not pairs:
        raise VolumeError(pred_dir, f"no prediction matches a reference case name in {ref_dir}")
    if num_classes is None:
        extra = set().union(*(np.unique(p).tolist() for _, p, *_ in pairs)) - set().union(
            *(np.unique(r).tolist() for _, _, r, *_ in pairs))
        if extra:
            raise VolumeError(pred_dir, f"the predictions hold label(s) {sorted(extra)} that no reference in {ref_dir} "
                              "has: are the folders swapped? The reference folder comes first, as in nnU-Net; give "
                              "--classes to score classes the references lack")
    k = num_classes or int(max(max(p.max(), r.max()) for _, p, r, *_ in pairs)) + 1
    cases = [{"case": name, **case_metrics(p, r, k, sp, tolerance_mm)} for name, p, r, sp, *_ in pairs]
    means = {}
    for m in METRICS:
        values = np.array([c[m] for c in cases], dtype=float)
        with np.errstate(all="ignore"):
            means[m] = [None if np.all(np.isnan(col)) else float(np.nanmean(col)) for col in values.T]
    dice_means = [d for d in means["dice"] if d is not None]
    # nnU-Net's keys first, so that scripts written for nnUNetv2_evaluate_folder read this file
    summary = {**nnunet_summary([(nnunet_case(p, r, k), pf, rf) for _, p, r, _, pf, rf in pairs]),
               "num_classes": k, "class_names": class_names(ref_dir, pred_dir, k), "cases": cases,
               "mean_per_class": means,
               "missing_predictions": missing,
               "missed_classes": np.sum([c["missed"] for c in cases], axis=0).astype(int).tolist(),
               "mean_foreground_dice": float(np.mean(dice_means)) if dice_means else None,
               "tolerance_mm": tolerance_mm}
    if out:
        out = Path(out)
        write_json(out.with_suffix(".json"), summary)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["case", "class", *METRICS])
        for c in cases:
            for j in range(k - 1):
                w.writerow([c["case"], j + 1, *[c[m][j] for m in METRICS]])
        write_text(out.with_suffix(".csv"), buf.getvalue())
    return summary
