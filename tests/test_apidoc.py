"""The API reference is made from the docstrings, kept current, and its examples run."""
import doctest
import importlib
from pathlib import Path

import pytest

from rog.apidoc import API, reference

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_committed_reference_is_current_and_documents_every_name():
    text = reference()
    assert DOCS.read_text() == text, "docs/api.md is stale: run `python -m rog.apidoc`"
    assert "(undocumented)" not in text and text.count(">>>") >= 10  # the examples are in it
    for module, names in API.items():
        assert f"## `{module}`" in text and all(f"`{name}(" in text for name in names), module


@pytest.mark.parametrize("module", sorted({*API, "rog.attacks.threat"}))
def test_examples_in_the_docstrings_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_the_entry_points_document_their_arguments_as_monai_does():
    from rog.attacks import APGD, FAB, PGD, Square
    from rog.attacks.base import Attack
    from rog.bench import Ensemble
    from rog.evaluate.metrics import dice_per_class
    from rog.infer.sliding_window import sliding_window
    from rog.models.registry import build_model
    from rog.corruptions import corrupt
    from rog.evaluate.metrics import case_metrics, dice_batch
    from rog.infer.predictor import predict_cases
    from rog.pipeline.experiment import run_experiment
    from rog.pipeline.sweeps import run_sweep
    from rog.plan import make_plan
    from rog.report.build import build_report
    from rog.artefacts import make_artefact, worst_artefact
    returns = (make_artefact, worst_artefact, Attack.__call__, dice_per_class, dice_batch, case_metrics, sliding_window, build_model, run_sweep,
               predict_cases, corrupt, make_plan, run_experiment, build_report)
    for obj in (APGD, FAB, PGD, Square, Ensemble, *returns):
        assert "Args:" in obj.__doc__, obj
    for obj in returns:
        assert "Returns:" in obj.__doc__, obj
