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


def _arg_lines(doc: str) -> list[str]:
    """The lines of the Args and Returns sections of `doc`."""
    import inspect
    import re
    out, inside = [], False
    for line in inspect.cleandoc(doc or "").splitlines():
        if re.fullmatch(r"\s*\w+:", line):
            inside = line.strip() in ("Args:", "Returns:")
        elif not line.strip():
            inside = False
        elif inside:
            out.append(line)
    return out


def test_each_argument_of_the_reference_has_its_own_line():
    # as MONAI's and torchattacks' references read: not "iters: steps; step: their size", nor
    # "lo, hi: the box"
    import inspect
    import re
    second = re.compile(r"[;.]\s+`?[a-z_][a-z0-9_]*`?:\s")
    shared = re.compile(r"^\s*`?[a-z_][a-z0-9_]*`?(\s*,\s*`?[a-z_][a-z0-9_]*`?)+:\s")
    assert second.search("iters: steps; step: their size") and shared.search("    lo, hi: the box")
    bad, seen = [], 0
    for module, names in API.items():
        for name in names:
            obj = getattr(importlib.import_module(module), name)
            members = [getattr(obj, k) for k in ("__init__", "__call__", "perturb", "run")
                       if inspect.isclass(obj) and k in vars(obj)]
            for line in (x for o in (obj, *members) for x in _arg_lines(o.__doc__)):
                seen += 1
                if second.search(line) or shared.search(line):
                    bad.append(f"{module}.{name}: {line.strip()}")
    assert seen > 100 and not bad, bad


def test_the_architecture_table_has_one_short_line_per_module():
    import rog
    src = Path(rog.__file__).parent
    arch = (DOCS.parent / "architecture.md").read_text()
    rows = [line for line in arch.splitlines() if line.startswith("| `")]
    named = {line.split("`")[1] for line in rows}
    modules = {str(p.relative_to(src)) for p in src.rglob("*.py")}
    # every module but the packages' re-exporting __init__ files has its row, and no row names a module that is gone
    assert modules - named <= {m for m in modules if m.endswith("/__init__.py")}, sorted(modules - named)
    assert named <= modules, sorted(named - modules)
    assert len(rows) > 80 and all(len(line) <= 130 for line in rows), max(rows, key=len)
