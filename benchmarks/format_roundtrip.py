"""One real case in every format rog reads: identical preprocessing and predictions, each
prediction written back in its input's format and geometry.

    python benchmarks/format_roundtrip.py RUN_DIR IMAGE LABEL OUT

RUN_DIR: a trained run (e.g. rog_work/demo/runs/rog_clean-s0); IMAGE, LABEL: one case (e.g. the
demo's held-out template, rog_work/demo/data/Nuclei/imagesTs/...). The image is rounded to
int16 once (a DICOM series holds integers), then written as NIfTI, NRRD, MHA and a DICOM series;
`rog predict` runs on each folder; the script prints, per format, the largest difference of
the preprocessed array and of the prediction from NIfTI's, the geometry's largest affine
difference from the input's, and the Dice of the prediction against LABEL.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np

from rog.data import formats
from rog.data.io import read_image, read_label, write_volume
from rog.data.preprocess import preprocess_arrays
from rog.evaluate.metrics import dice_per_class, mean_dice
from rog.plan import Plan
from rog.rundir import RunDir

run, image_path, label_path, out = RunDir(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
plan = Plan.load(run.plan)
image, geometry = read_image([image_path])
label, _ = read_label(label_path)
image = np.rint(image[0]).astype(np.int16)
affine = np.asarray(geometry.affine)
reference_pre = reference_pred = None
for ending in (".nii.gz", ".nrrd", ".mha", formats.DICOM):
    folder = out / f"in_{ending.strip('.') or 'dicom'}"
    write_volume(folder / f"case{ending}", image, affine)
    data, g = read_image([folder / f"case{ending}"])
    pre = preprocess_arrays(data, None, g, plan)[0]
    pred_dir = out / f"pred_{ending.strip('.') or 'dicom'}"
    subprocess.run([sys.executable, "-m", "rog", "predict", str(run.path), "-i", str(folder), "-o", str(pred_dir),
                    "-q"], check=True)
    pred, pg = read_label(pred_dir / f"case{ending}")
    reference_pre = pre if reference_pre is None else reference_pre
    reference_pred = pred if reference_pred is None else reference_pred
    print(f"{ending or 'DICOM series':12s} written as {formats.ending(pred_dir / f'case{ending}') or 'DICOM series'}: "
          f"preprocessed max |diff| {np.abs(pre - reference_pre).max():.2e}, "
          f"prediction voxels differing {int((pred != reference_pred).sum())}, "
          f"affine max |diff| {np.abs(np.asarray(pg.affine) - affine).max():.2e}, "
          f"Dice {mean_dice(dice_per_class(pred, label, plan.num_classes)):.4f}")
