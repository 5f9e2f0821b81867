"""`rog evaluate PRED GT`: score a folder of predicted label maps against references."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from rog.atomic import write_json, write_text
from rog.data.io import VolumeError, read_label
from rog.data.validate import label_problems
from rog.evaluate.metrics import case_metrics

METRICS = ("dice", "hd95", "nsd")


def _nifti_names(folder: Path) -> dict[str, Path]:
    return {f.name: f for f in sorted(folder.iterdir())
            if f.name.endswith((".nii.gz", ".nii")) and not f.name.startswith(".")}


def evaluate_folders(pred_dir: str | Path, ref_dir: str | Path, num_classes: int | None = None,
                     out: str | Path | None = None, tolerance_mm: float = 1.0) -> dict:
    """Per case and class Dice, HD95 and surface Dice for every reference with a prediction of
    the same file name. Writes `out`.json and `out`.csv when `out` is given."""
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    preds, refs = _nifti_names(pred_dir), _nifti_names(ref_dir)
    missing = sorted(set(refs) - set(preds))
    pairs = []
    for name in sorted(set(refs) & set(preds)):
        pred, pgeom = read_label(preds[name])
        ref, rgeom = read_label(refs[name])
        problems = label_problems(pred, pgeom, rgeom)
        if problems:
            raise VolumeError(preds[name], f"{problems[0]} (reference {refs[name]})")
        pairs.append((name, pred, ref, rgeom.spacing))
    if not pairs:
        raise VolumeError(pred_dir, f"no prediction matches a reference file name in {ref_dir}")
    k = num_classes or int(max(max(p.max(), r.max()) for _, p, r, _ in pairs)) + 1
    cases = [{"case": name, **case_metrics(p, r, k, sp, tolerance_mm)} for name, p, r, sp in pairs]
    means = {}
    for m in METRICS:
        values = np.array([c[m] for c in cases], dtype=float)
        with np.errstate(all="ignore"):
            means[m] = [None if np.all(np.isnan(col)) else float(np.nanmean(col)) for col in values.T]
    dice_means = [d for d in means["dice"] if d is not None]
    summary = {"num_classes": k, "cases": cases, "mean": means, "missing_predictions": missing,
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
