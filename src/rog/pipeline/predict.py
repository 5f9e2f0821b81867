"""`rog predict`: label maps (and, on request, class probabilities) of one model or an
ensemble in each input's original geometry, with what made them recorded in the output folder."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rog.atomic import file_hash, writable_dir, write_json
from rog.certify.smoothing import Smoothing
from rog.errors import UsageError, read_json_object
from rog.messages import log
from rog.pipeline.models import GridModel
from rog.rundir import PredictionsDir

# nnU-Net's default test-time augmentation: mirroring along every spatial axis
MIRROR_AXES = [0, 1, 2]


@dataclass
class PredictRequest:
    """Predict the cases of `input` (a dataset folder's test list or a folder of NIfTI images)
    into `output` with `sources`' models (`rog.pipeline.sources.GRID_SOURCES`): one, or several ensembled by averaging their
    probabilities on the original grid. `postprocess`: "auto" (the runs' decision, where they
    agree), "on" or "off"; `overlap` of the sliding window; `tta`: mirroring over the three
    axes (nnU-Net's default); `probabilities`: also NAME.npz; `resume`: keep finished cases
    (only under the same models and settings); `smooth`: predict with the smoothed model
    (`rog.certify.smoothing.Smoothing`, the labels `rog certify` certifies); `dicom`: the
    output of a DICOM series input, "seg" (one DICOM-SEG file referencing it,
    `rog.data.dicom_seg`) or "series" (a label series of its own, slice by slice)."""

    sources: list  # of RunSource or FactorySource
    input: str | Path
    output: str | Path
    postprocess: str = "auto"
    overlap: float = 0.5
    tta: bool = True
    device: str = "auto"
    probabilities: bool = False
    resume: bool = False
    smooth: Smoothing | None = None
    dicom: str = "seg"


@dataclass
class PredictResult:
    status: dict  # case -> "ok", "kept" (resumed) or the error message
    seconds: dict = field(default_factory=dict)  # stage -> seconds over all cases
    steps: dict | None = None  # the post-processing applied

    @property
    def failed(self) -> dict:
        return {k: v for k, v in self.status.items() if v not in ("ok", "kept")}


def _steps(req: PredictRequest, models: list) -> dict | None:
    """The post-processing of `req`: "on" both steps, "off" none, "auto" the runs' decision
    where every run decided the same (an ensemble of disagreeing runs gets none)."""
    if req.postprocess == "on":
        return {"largest_component": True, "small_lesions": True}
    decided = [m.run.postprocessing_steps() if m.run else None for m in models]
    return decided[0] if req.postprocess == "auto" and all(d == decided[0] for d in decided) else None


def _warn_other_modalities(folder: Path, models: list) -> None:
    """One warning per model whose plan names other channels than the dataset.json of the
    input `folder` (a T1 model on a CT task runs, and is wrong); a plan without names (one
    made for `--model`, "ch0") and a folder without dataset.json say nothing."""
    from rog.data.dataset import load_dataset
    if not (folder / "dataset.json").is_file():
        return
    theirs = load_dataset(folder).modalities
    for m in models:
        mine = m.plan.modalities
        if all(c.startswith("ch") and c[2:].isdigit() for c in mine):
            continue
        if [c.strip().lower() for c in mine] != [c.strip().lower() for c in theirs]:
            log.warning(f"{folder / 'dataset.json'}: channels {', '.join(theirs)}, but {m.name} was planned for "
                        f"{', '.join(mine)}: predicting anyway; check that the model is meant for these scans")


def predict(req: PredictRequest) -> PredictResult:
    """Predict every case of `req`, recording the models and settings in rog_predict.json.

    Returns:
        Each case's status ("ok", "kept" or the error), the seconds per stage, the
        post-processing applied. A failing case never stops the others.
    """
    from rog.devices import resolve_device
    from rog.infer.predictor import StageTimes, cases_from_input, predict_cases
    if not req.sources:
        raise UsageError("give a run directory (or several, to ensemble them), or --model with --plan")
    models: list[GridModel] = [s.load() for s in req.sources]
    first = models[0].plan
    for m in models[1:]:
        if (m.plan.num_classes, m.plan.num_channels) != (first.num_classes, first.num_channels):
            raise UsageError(f"{m.name}: {m.plan.num_classes} classes and {m.plan.num_channels} channel(s), "
                             f"the first model {first.num_classes} and {first.num_channels}: cannot be ensembled")
    steps = _steps(req, models)
    mirror = MIRROR_AXES if req.tta else None
    out = PredictionsDir(req.output)
    provenance = {"models": [str(m.run.path.resolve()) if m.run else m.factory for m in models],
                  "weights": [file_hash(m.weights) for m in models], "plans": [asdict(m.plan) for m in models],
                  "overlap": req.overlap, "mirror_axes": mirror, "postprocessing": steps,
                  "probabilities": req.probabilities, **({"smooth": asdict(req.smooth)} if req.smooth else {}),
                  **({"dicom": req.dicom} if req.dicom != "seg" else {})}
    if req.resume and out.provenance.is_file():
        previous = read_json_object(out.provenance, UsageError)
        changed = sorted(k for k in provenance if previous.get(k) != json.loads(json.dumps(provenance[k])))
        if changed:
            raise UsageError(f"{out.provenance}: these predictions were made with other {', '.join(changed)}; "
                             "use another output folder, or leave out --continue to predict again")
    cases = cases_from_input(req.input)
    _warn_other_modalities(Path(req.input), models)
    writable_dir(req.output)
    write_json(out.provenance, provenance)
    times = StageTimes()
    status = predict_cases(models[0].network, first, cases, req.output, resolve_device(req.device), req.overlap,
                           mirror, steps, times=times, members=[(m.network, m.plan) for m in models[1:]],
                           probabilities=req.probabilities, resume=req.resume, smooth=req.smooth,
                           dicom_seg=req.dicom == "seg")
    return PredictResult(status, dict(times.items()), steps)
