"""Whole-case prediction written back in each case's original geometry.

image file(s) -> preprocessing as in the plan -> sliding window -> softmax -> inverse of the
preprocessing (probabilities resampled to the original grid) -> argmax -> optional
post-processing -> uint8 NIfTI with the input's exact shape and affine.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from rog.atomic import writable_dir
from rog.certify.smoothing import Smoothing
from rog.data import formats
from rog.data.dataset import Case, load_dataset
from rog.data.dicom_seg import write_seg
from rog.data.io import Geometry, VolumeError, write_label
from rog.data.preprocess import invert_probabilities, invert_to_label, preprocess_arrays
from rog.data.validate import read_valid_image
from rog.infer.postprocess import class_groups, postprocess
from rog.infer.sliding_window import sliding_window
from rog.messages import log
from rog.plan import Plan
from rog.progress import progress_bar
from rog.rundir import PredictionsDir


def predict_probabilities(model: nn.Module, image: np.ndarray, plan: Plan, device="cpu",
                          overlap: float = 0.5, mirror_axes: Sequence[int] | None = None,
                          batch_size: int = 2, smooth: Smoothing | None = None) -> np.ndarray:
    """Softmax `[K, x, y, z]` for a preprocessed image `[C, x, y, z]`; with `smooth`, the
    smoothed model's instead: each class's share of the votes of the whole inference on the
    noisy copies."""
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)

    def window(v: torch.Tensor) -> torch.Tensor:
        return sliding_window(model, v, plan.val_patch_size, overlap, batch_size=batch_size, mirror_axes=mirror_axes)
    with torch.no_grad():
        if smooth is not None:
            return smooth.votes(window, x, plan.num_classes).cpu().numpy()
        return torch.softmax(window(x)[0].float(), 0).cpu().numpy()


class StageTimes(dict):
    """Seconds per stage, summed over cases: `with times("read"): ...`."""

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[stage] = self.get(stage, 0.0) + time.perf_counter() - t0


def predict_case(model: nn.Module, image: np.ndarray, geometry: Geometry, plan: Plan, device="cpu",
                 overlap: float = 0.5, mirror_axes=None, steps: dict | None = None,
                 times: StageTimes | None = None, members: Sequence[tuple[nn.Module, Plan]] = (),
                 probabilities: bool = False, smooth: Smoothing | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(label map `[X, Y, Z]` uint8, probabilities `[K, X, Y, Z]` float32 or None) on the
    original grid for a raw image `[C, X, Y, Z]` (with the plan's channel count, validated by
    the caller: `read_valid_image`). `members`: more (model, plan) pairs ensembled with this
    one, each with its own plan's preprocessing, by averaging the probabilities on the original
    grid (nnU-Net's ensembling); `probabilities`: return them (else one model streams its
    classes, about two full-resolution maps of memory). `times` collects the seconds of each
    stage: preprocess, sliding window, inverse, post-process. `smooth`: each model smoothed
    (`predict_probabilities`), its probabilities the votes' shares."""
    times = times if times is not None else StageTimes()
    models = [(model, plan), *members]
    stream = len(models) == 1 and not probabilities
    total = label = None
    for net, p in models:
        with times("preprocess"):
            pre, _, props = preprocess_arrays(image, None, geometry, p)
        with times("sliding window"):
            probs = predict_probabilities(net, pre, p, device, overlap, mirror_axes, smooth=smooth)
        with times("inverse"):
            if stream:
                label = invert_to_label(probs, props)
            else:
                full = invert_probabilities(probs, props)
                total = full if total is None else total + full
    if not stream:
        total /= len(models)
        label = total.argmax(0).astype(np.uint8)
    if steps:
        with times("post-process"):
            organs, lesions = class_groups(plan, float(np.prod(geometry.spacing)))
            label = postprocess(label, steps, organs, lesions)
    return label, (total if probabilities else None)


def cases_from_input(path: str | Path) -> list[Case]:
    """Cases to predict from a dataset folder (its test list), or a folder of images in any
    format `rog.data.formats` reads: nnU-Net per-channel files (`CASE_0000.nii.gz`, ...), one
    (3D/4D) file per case, or one DICOM series folder per case. An input with no image is an
    error, never an empty success."""
    path = Path(path)
    cases = _cases_in(path)
    if not cases:
        raise VolumeError(path, f"no image to predict (no {', '.join(formats.ENDINGS)} file or DICOM series "
                          "folder, or an empty test list)")
    return cases


def _cases_in(path: Path) -> list[Case]:
    if (path / "dataset.json").is_file():
        return load_dataset(path).test
    if not path.is_dir():
        raise VolumeError(path, "input folder not found")
    files = formats.images_in(path)
    per_channel = [stem[:-5] for stem in files if stem.endswith("_0000")]
    if per_channel:
        return [Case(name, tuple(f for stem, f in files.items()
                                 if stem.startswith(name + "_") and stem[len(name) + 1:].isdigit()))
                for name in per_channel]
    return [Case(stem, (f,)) for stem, f in files.items()]


def predict_cases(model: nn.Module, plan: Plan, cases: list[Case], out_dir: str | Path, device="cpu",
                  overlap: float = 0.5, mirror_axes=None, steps: dict | None = None,
                  progress: bool = True, times: StageTimes | None = None,
                  members: Sequence[tuple[nn.Module, Plan]] = (), probabilities: bool = False,
                  resume: bool = False, smooth: Smoothing | None = None, dicom_seg: bool = True) -> dict[str, str]:
    """Predict each case into a predictions folder; a failing case never stops the others.

    Args:
        model: the model.
        plan: the plan that preprocesses its input.
        cases: `rog.data.dataset.Case`s (image files in any geometry).
        out_dir: the folder (`rog.rundir.PredictionsDir`: each label map in its image's format
            and geometry, with `probabilities` also NAME.npz).
        overlap: the sliding window's.
        mirror_axes: the mirroring's axes (None: none).
        steps: the post-processing.
        members: more (model, plan) pairs ensembled with this one (`predict_case`).
        resume: skip cases whose files exist (written atomically: an existing file is finished).
        smooth: predict with the smoothed model (`rog.certify.smoothing.Smoothing`).
        dicom_seg: a DICOM series' prediction as NAME.dcm, DICOM-SEG referencing it
            (`rog.data.dicom_seg`); False: a label series NAME/ of its own.
        times: collects the seconds of each stage (read and write too) over all cases.

    Returns:
        {name: 'ok', 'kept' or the error message}.
    """
    times = times if times is not None else StageTimes()
    out = PredictionsDir(writable_dir(out_dir))
    model = model.to(device).eval()
    members = [(m.to(device).eval(), p) for m, p in members]
    status = {}
    for case in progress_bar(cases, desc="predict", disable=not progress):
        ending = formats.ending(case.images[0])
        ending = ".nii.gz" if ending is None else ending  # a missing image fails below, by name
        seg = dicom_seg and ending == formats.DICOM
        ending = formats.SEG if seg else ending
        if resume and out.finished(case.name, ending, probabilities):
            status[case.name] = "kept"
            continue
        try:
            with times("read"):
                image, geom = read_valid_image(case, plan.num_channels)
            label, probs = predict_case(model, image, geom, plan, device, overlap, mirror_axes, steps, times,
                                        members, probabilities, smooth)
            with times("write"):
                if probs is not None:
                    out.write_probabilities(case.name, probs, geom.affine)
                # last: its presence marks the case done
                if seg:
                    write_seg(out.label(case.name, ending), label, case.images[0], plan.class_names)
                else:
                    write_label(out.label(case.name, ending), label, geom)
            status[case.name] = "ok"
        except (VolumeError, ValueError) as e:
            status[case.name] = f"failed: {e}"
            log.warning(f"{case.name}: {status[case.name]}")
    return status
