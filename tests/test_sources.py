"""One way in for every model: the options choose one source of `rog.pipeline.sources`, every
option another source takes is refused by name, and neither the CLI nor the sweep branches on
the kind of source."""
import ast
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

import rog
from rog.errors import UsageError
from rog.pipeline import sources as s

SRC = Path(rog.__file__).parent
# the options that tell sources apart, the sources' names and tags: none of them may steer a
# branch outside rog.pipeline.sources
SOURCE_KEYS = {"run", "runs", "model", "checkpoint", "nnunet", "bundle", "images", "tool"}
TAGS = {c.tag for c in s.SOURCES if hasattr(c, "tag")}
CLASSES = {c.__name__ for c in s.SOURCES} | {"GridModel", "ScanModel", "ExternalModel"}


def _source_branches(tree: ast.AST) -> list[int]:
    """Lines of `tree` whose branch conditions read a source-choosing option, test a source
    class or compare with a source's tag."""
    lines = []
    for node in ast.walk(tree):
        tests = [node.test] if isinstance(node, (ast.If, ast.IfExp, ast.While)) else []
        tests += [v for v in node.values] if isinstance(node, ast.BoolOp) else []
        tests += [node] if isinstance(node, ast.Compare) else []
        for t in tests:
            for n in ast.walk(t):
                if (isinstance(n, ast.Attribute) and n.attr in SOURCE_KEYS
                        or isinstance(n, ast.Name) and n.id in CLASSES
                        or isinstance(n, ast.Constant) and n.value in TAGS):
                    lines.append(n.lineno)
    return sorted(set(lines))


def test_neither_the_cli_nor_the_sweep_branches_on_the_source():
    files = sorted((SRC / "cli").glob("*.py")) + [SRC / "pipeline" / "sweeps.py"]
    bad = {str(f.relative_to(SRC)): lines for f in files if (lines := _source_branches(ast.parse(f.read_text())))}
    assert not bad, bad
    # and the check sees the branches this replaced
    old = ('scope = a.scope or ("volume" if a.nnunet or a.bundle or a.images else "patch")\n'
           "if req.source.tool:\n    pass\n"
           'flag = f"--{tool}" if tool in ("nnunet", "bundle") else "--images"\n'
           "if a.runs and a.model:\n    pass\n")
    assert _source_branches(ast.parse(old)) == [1, 2, 4, 5]


@pytest.mark.parametrize("options, expected", [
    ({"run": "r"}, s.RunSource),
    ({"run": "r", "data": "d"}, s.RunSource),
    ({"model": "rog", "plan": "p.json", "checkpoint": "w.pt"}, s.FactorySource),
    ({"checkpoint": "m.pt", "plan": "p.json"}, s.FactorySource),
    ({"model": "pkg.mod:make", "images": "i", "labels": "l", "window": [8, 8, 8]}, s.RawSource),
    ({"checkpoint": "m.pt", "images": "i", "labels": "l"}, s.RawSource),
    ({"run": "r", "images": "i", "labels": "l"}, s.RunScansSource),
    ({"nnunet": "n", "images": "i", "labels": "l", "folds": [0, 1], "tta": False}, s.NnunetSource),
    ({"bundle": "b", "images": "i", "labels": "l"}, s.BundleSource),
])
def test_the_options_choose_one_source(options, expected):
    # a parsed command line: every option present, most at their defaults, some of no source
    line = {"run": None, "model": None, "checkpoint": None, "plan": None, "data": None, "nnunet": None, "bundle": None,
            "images": None, "labels": None, "folds": None, "tta": True, "postprocessing": "auto",
            "perturb_background": False, "window": None, "overlap": 0.5, "eps": [8.0], "label": "x"}
    source = s.source_from({**line, **options})
    assert type(source) is expected
    for k, v in options.items():
        assert getattr(source, k) == (tuple(v) if isinstance(v, list) else v)
    with pytest.raises(AttributeError):  # frozen: a source is what the command line said
        source.images = "other"


@pytest.mark.parametrize("options, message", [
    ({"run": "r", "folds": [0]}, "--folds: for an nnU-Net model (--nnunet), not a run on its preprocessed cases"),
    ({"run": "r", "tta": False}, "--disable-tta: for an nnU-Net model"),
    ({"run": "r", "window": [8, 8, 8]}, "--window: for a model given with --model or --checkpoint and --images"),
    ({"nnunet": "n", "bundle": "b", "images": "i", "labels": "l"}, "--bundle: for a MONAI bundle (--bundle), not an "
                                                                    "nnU-Net model"),
    ({"run": "r", "model": "rog", "plan": "p"}, "RUN (a run directory): for a run"),
    ({"run": "r", "checkpoint": "w.pt", "plan": "p"}, "RUN (a run directory): for a run"),
    ({"model": "rog"}, "--model needs --plan"),
    ({"nnunet": "n", "images": "i"}, "an nnU-Net model (--nnunet): needs --images and --labels"),
    ({"images": "i", "labels": "l"}, "give a run directory, or --model"),
    ({}, "give a run directory, or --model"),
])
def test_options_no_source_takes_are_refused_by_name(options, message):
    with pytest.raises(UsageError) as e:
        s.source_from(options)
    assert message in str(e.value), str(e.value)


def test_prediction_takes_models_on_rogs_grid_only():
    runs = s.sources_from(["a", "b"], {"model": None, "plan": None}, s.GRID_SOURCES)
    assert [type(r) for r in runs] == [s.RunSource] * 2 and [r.run for r in runs] == ["a", "b"]
    with pytest.raises(UsageError, match="give a run directory, or --model .* with --plan$"):
        s.sources_from([], {"nnunet": "n", "images": "i", "labels": "l"}, s.GRID_SOURCES)


def test_a_field_shared_by_sources_has_one_default():
    seen = {}
    for c in s.SOURCES:
        for f in fields(c):
            if f.default is not MISSING:
                assert seen.setdefault(f.name, f.default) == f.default, (c.__name__, f.name)
    assert seen["overlap"] == 0.5 and seen["tta"] is True
