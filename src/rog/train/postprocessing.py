"""Decide, on a run's validation cases, which post-processing steps to keep (as nnU-Net)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rog.atomic import write_json
from rog.data.preprocess import load_case
from rog.infer.postprocess import class_groups, decide
from rog.infer.predictor import predict_probabilities
from rog.progress import progress_bar
from rog.rundir import RunDir


def decide_for_run(model, plan, data_dir: str | Path, run_dir: str | Path, device="cpu",
                   progress: bool = True) -> dict:
    """Predict every validation case (whole preprocessed volume, sliding window), then keep
    each post-processing step only if it raises mean Dice. Writes the run's post-processing decision."""
    run = RunDir(run_dir)
    names = run.read_splits()["val"]
    preds, refs = [], []
    model = model.to(device).eval()
    for name in progress_bar(names, desc="post-processing decision", unit="case", disable=not progress):
        image, label, _ = load_case(data_dir, name, mmap=False)
        preds.append(predict_probabilities(model, image, plan, device).argmax(0))
        refs.append(np.asarray(label))
    organs, lesions = class_groups(plan, float(np.prod(plan.target_spacing)))
    decision = {**decide(preds, refs, plan.num_classes, organs, lesions), "cases": names}
    write_json(run.postprocessing, decision)
    return decision
