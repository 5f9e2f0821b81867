"""`rog predict`: label maps of a model in each input's original geometry."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rog.pipeline.models import ModelSource, load_model


@dataclass
class PredictRequest:
    """Predict the cases of `input` (a dataset folder's test list or a folder of NIfTI images)
    into `output` with `source`'s model. `postprocess`: "auto" (the run's decision), "on" or
    "off"; `overlap` of the sliding window; `tta`: mirroring over the three axes."""

    source: ModelSource
    input: str | Path
    output: str | Path
    postprocess: str = "auto"
    overlap: float = 0.5
    tta: bool = False
    device: str = "auto"


@dataclass
class PredictResult:
    status: dict  # case -> "ok" or the error message
    seconds: dict = field(default_factory=dict)  # stage -> seconds over all cases

    @property
    def failed(self) -> dict:
        return {k: v for k, v in self.status.items() if v != "ok"}


def predict(req: PredictRequest) -> PredictResult:
    from rog.devices import resolve_device
    from rog.infer.predictor import StageTimes, cases_from_input, predict_cases
    m = load_model(req.source)
    steps = None
    if req.postprocess == "on":
        steps = {"largest_component": True, "small_lesions": True}
    elif req.postprocess == "auto" and m.run is not None:
        steps = m.run.postprocessing_steps()
    cases = cases_from_input(req.input)
    times = StageTimes()
    status = predict_cases(m.network, m.plan, cases, req.output, resolve_device(req.device), req.overlap,
                           [0, 1, 2] if req.tta else None, steps, times=times)
    return PredictResult(status, dict(times.items()))
