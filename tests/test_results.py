"""The results document (`rog.results`): typed, versioned, read back whole, older versions
loaded, newer ones and unknown keys refused by name, and the one module that spells its keys."""
import ast
import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import pytest

import rog.results as schema
from rog.cli import main
from rog.report.build import build_report
from rog.results import Results, ResultsError
from rog.rundir import ResultsDir

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).resolve().parents[1] / "src" / "rog"


def _folder(tmp_path, kind: str, **change) -> ResultsDir:
    """A results folder holding the version-1 document (written before the schema existed)
    of `kind`, with `change` applied to its JSON."""
    out = tmp_path / kind
    out.mkdir()
    raw = json.loads((DATA / f"results_v1_{kind}.json").read_text())
    (out / "results.json").write_text(json.dumps({**raw, **change}))
    return ResultsDir(out)


@pytest.mark.parametrize("kind", ["attack", "corruption"])
def test_version_1_documents_load_typed_and_round_trip(tmp_path, kind):
    raw = json.loads((DATA / f"results_v1_{kind}.json").read_text())
    r = _folder(tmp_path, kind).read()
    assert r.kind == kind and r.version == schema.VERSION and r.finished
    record_cls, summary_cls = schema.KINDS[kind]
    assert all(isinstance(x, record_cls) for x in r.records) and isinstance(r.summary, summary_cls)
    assert [x.dice for x in r.records] == [x["dice"] for x in raw["records"]]
    assert {k: v.dice for k, v in r.clean.items()} == {k: v["dice"] for k, v in raw["clean"].items()}
    assert r.meta.label == raw["meta"]["label"] and r.meta.model.parameters == raw["meta"]["model"]["parameters"]
    # written as version 2, it reads back equal: nothing is lost on the way
    again = Results.from_json(json.loads(json.dumps(r.to_json())), "again")
    assert again == r and r.to_json()["version"] == 2
    if kind == "attack":
        assert r.summary.eps_items()[0][1].worst_case_dice == raw["summary"]["eps"]["4.0"]["worst_case_dice"]


def test_a_newer_version_or_an_unknown_key_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(ResultsError, match=r"results\.json: results document version 3; this rog reads versions 1 to 2"):
        _folder(tmp_path, "attack", version=3).read()
    with pytest.raises(ResultsError, match=r"unknown key\(s\) \['colour'\]"):
        _folder(tmp_path, "corruption", colour="red").read()
    # the report, on such a folder: one line naming the file, exit 2, nothing written
    assert main(["report", str(tmp_path / "attack"), "-o", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "attack/results.json" in err and "version 3" in err
    assert not (tmp_path / "rep" / "report.html").exists()


def test_the_report_renders_version_1_results(tmp_path):
    attack, corruption = _folder(tmp_path, "attack"), _folder(tmp_path, "corruption")
    summary = build_report([attack.path, corruption.path], tmp_path / "rep", panels=False)
    (name, scores), = summary.models.items()
    raw = json.loads((DATA / "results_v1_attack.json").read_text())
    assert name == raw["meta"]["label"] and scores.clean_dice == raw["summary"]["clean_dice"]
    assert set(summary.corruptions) == {json.loads((DATA / "results_v1_corruption.json").read_text())["meta"]["label"]}
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Scanner artefacts" in html and "Dice under attack" in html
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["models"][name]["clean_dice"] == scores.clean_dice


# Modules that read or write results documents; the attack library (attacks/, its `info`) and
# the data, training and model layers have documents of their own.
RESULTS_MODULES = ["bench", "report", "pipeline", "cli", "demo.py", "rundir.py", "evaluate/robustness.py",
                   "evaluate/corruption.py", "evaluate/seeds.py"]
# keys of another document that a results module reads, the same word as a results field
OTHER_DOCUMENTS = {
    "bench/runner.py": {"dice"},  # an attack's `info` (the large-eps check's PGD)
    "bench/ensemble.py": {"dice", "clean_dice", "skipped", "worst_case_dice", "tau"},  # the in-memory Ensemble's `info`
    "bench/records.py": {"clean"},  # qualitative.npz's array names
    "report/figures.py": {"clean"},  # qualitative.npz's array names
    "bench/cases.py": {"test"},  # the cases' source, a key of `SOURCES`
    "cli/commands.py": {"cases", "num_classes", "class_names"},  # `rog evaluate`'s summary (test_eval.json)
    "pipeline/predict.py": {"weights"},  # rog_predict.json, the predictions' record
    "pipeline/experiment.py": {"dice"},  # `rog evaluate`'s summary (test_eval.json)
    "pipeline/sources.py": {"run"},  # the command line's option names
}


def _spelled(tree) -> list[tuple[str, int]]:
    """(string, line) of every string used as a subscript, a .get/.pop/.setdefault key or a
    dict literal's key."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            out.append((node.slice.value, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "pop", "setdefault") and node.args and isinstance(node.args[0], ast.Constant)):
            out.append((node.args[0].value, node.lineno))
        elif isinstance(node, ast.Dict):
            out += [(k.value, node.lineno) for k in node.keys if isinstance(k, ast.Constant)]
    return [(v, n) for v, n in out if isinstance(v, str)]


def test_no_module_but_the_schema_spells_a_results_key():
    keys = {f.name for v in vars(schema).values() if isinstance(v, type) and is_dataclass(v)
            and v.__module__ == schema.__name__ for f in fields(v)}
    assert {"worst_case_dice", "in_ball", "cases_source_text", "attack_configs"} <= keys
    files = [f for m in RESULTS_MODULES for f in ((SRC / m).rglob("*.py") if (SRC / m).is_dir() else [SRC / m])]
    assert len(files) > 20
    bad = [f"{f.relative_to(SRC)}:{line} {v!r}" for f in files for v, line in _spelled(ast.parse(f.read_text()))
           if v in keys - OTHER_DOCUMENTS.get(str(f.relative_to(SRC)), set())]
    assert not bad, bad
    # and the check sees a spelled key where there is one
    assert _spelled(ast.parse("r['worst_case_dice']; d.get('in_ball'); {'tau': 1}")) == [
        ("worst_case_dice", 1), ("in_ball", 1), ("tau", 1)]


def test_the_cli_only_parses_and_prints():
    # the workflow lives in rog.pipeline: every CLI module is short, and none imports the
    # benchmark runners, the trainer or the attack library at module level
    for f in (SRC / "cli").glob("*.py"):
        assert len(f.read_text().splitlines()) < 250, f
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                assert not node.module.startswith(("rog.bench", "rog.train", "rog.attacks")), (f, node.module)
    assert not (SRC / "cli.py").exists() and not (SRC / "workdir.py").exists() and not (SRC / "bench" / "job.py").exists()


def _grid(tmp_path, name: str, label: str, keep) -> ResultsDir:
    """The version-1 attack document labelled `label`, with only the eps in `keep`."""
    raw = json.loads((DATA / "results_v1_attack.json").read_text())
    raw["summary"]["eps"] = {k: v for k, v in raw["summary"]["eps"].items() if float(k) in keep}
    raw["records"] = [r for r in raw["records"] if r["eps"] in keep]
    raw["meta"]["label"] = label
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps(raw))
    return ResultsDir(tmp_path / name)


def test_runs_on_different_eps_grids_are_compared_at_their_common_eps(tmp_path, capsys):
    # one model's results twice, one of them attacked at one eps fewer: the same model, so the
    # report must find no gain, and each column must hold one eps
    a, b = _grid(tmp_path, "a", "a", (4.0, 8.0, 12.0, 16.0)), _grid(tmp_path, "b", "b", (4.0, 8.0, 12.0))
    summary = build_report([a.path, b.path], tmp_path / "rep", panels=False, gain=("a", "b"))
    assert summary.common_eps == ["4.0", "8.0", "12.0"]
    assert summary.models["a"].auc_worst_case == summary.models["b"].auc_worst_case
    assert set(summary.models["a"].eps) == set(summary.models["b"].eps) == {"4.0", "8.0", "12.0"}
    assert summary.seeds.gain.gain == 0 and not summary.seeds.gain.holds
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<th>eps 12/255</th>" in html and "<th>eps 16/255</th>" not in html and "attacked at different eps" in html
    # one grid: nothing restricted, nothing said
    alone = build_report([a.path], tmp_path / "rep1", panels=False)
    assert alone.common_eps is None and "<th>eps 16/255</th>" in (tmp_path / "rep1" / "report.html").read_text()
    # no eps in common: one line naming the grids, nothing written
    c = _grid(tmp_path, "c", "c", (16.0,))
    assert main(["report", str(b.path), str(c.path), "-o", str(tmp_path / "rep2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no eps common to every attack result: b 4/8/12; c 16" in err
    assert not (tmp_path / "rep2").exists()


WORST = {4.0: (0.45, 0.40), 8.0: (0.30, 0.33), 12.0: (0.12, 0.25), 16.0: (0.05, 0.15)}


def _scored(tmp_path, name, tau, worst=WORST, attack="apgd-ce"):
    """A results folder of model `name`: both cases' records (one `attack`) at every eps with
    the `worst` Dice pairs, summarised at `tau` as `rog attack` does; and its robust accuracies."""
    from rog.evaluate.robustness import summarize
    from rog.results import AttackRecord, Score
    raw = json.loads((DATA / "results_v1_attack.json").read_text())
    raw["records"] = [dict(raw["records"][0], case=c, eps=e, norm=e, dice=d, dice_per_class=[d] * 4, broken=d < tau,
                           attack=attack, attack_id=f"{attack}@5") for e, pair in worst.items()
                      for c, d in zip(raw["clean"], pair)]
    clean = {c: Score(**v) for c, v in raw["clean"].items()}
    raw["tau"], raw["meta"]["label"] = tau, name
    raw["summary"] = asdict(summarize([AttackRecord(**r) for r in raw["records"]], clean, tau))
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps(raw))
    return ResultsDir(tmp_path / name), {k: v["robust_accuracy"] for k, v in raw["summary"]["eps"].items()}


def test_a_report_of_two_models_states_which_is_more_robust_first(tmp_path):
    stronger = {e: (d + 0.1, d2 + 0.1) for e, (d, d2) in WORST.items()}
    (weak, _), (strong, _) = _scored(tmp_path, "weak", 0.32), _scored(tmp_path, "strong", 0.32, stronger)
    s = build_report([weak.path, strong.path], tmp_path / "rep", panels=False)
    (found,) = s.seeds.findings
    assert found.text.startswith("strong's AUC") and found.gain == pytest.approx(
        s.models["strong"].auc_worst_case - s.models["weak"].auc_worst_case) and found.gain > 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.index("<h2>Finding</h2>") < html.index("Dice under attack") and "tau 0.320" in html
    assert "PGD vs APGD-CE" not in html and "pgd_vs_apgd.png" not in s.figures  # no PGD ran: no such section
    alone = build_report([weak.path], tmp_path / "rep1", panels=False)
    assert alone.seeds.findings == [] and "<h2>Finding</h2>" not in (tmp_path / "rep1" / "report.html").read_text()


def test_every_robust_accuracy_of_a_report_is_at_one_tau(tmp_path, capsys):
    # two models with their own tau (0.32 and 0.10): the report scores both at one tau, the
    # first model's unless told, and keeps each one's own beside it
    def scored(name, tau):
        return _scored(tmp_path, name, tau)

    (a, own_a), (b, own) = scored("a", 0.319948976713937), scored("b", 0.1)
    s = build_report([a.path, b.path], tmp_path / "rep", panels=False)
    assert s.tau.source == "a" and s.tau.value == pytest.approx(0.319948976713937)
    assert s.models["b"].own_tau == 0.1 and s.models["a"].own_tau == s.tau.value
    # at its own tau a's recomputed accuracies are its results' own; b's are a's (the same records)
    assert {k: v.robust_accuracy for k, v in s.models["a"].eps.items()} == own_a == {"4.0": 1.0, "8.0": 0.5,
                                                                                    "12.0": 0.0, "16.0": 0.0}
    assert {k: v.robust_accuracy for k, v in s.models["b"].eps.items()} == {"4.0": 1.0, "8.0": 0.5, "12.0": 0.0,
                                                                           "16.0": 0.0}
    assert own["12.0"] == 1.0  # b's own tau would have said "robust" there
    assert "tau 0.320, half the mean clean Dice of a" in (tmp_path / "rep" / "report.html").read_text()
    by_b = build_report([a.path, b.path], tmp_path / "rep_b", panels=False, tau_from="b")
    assert by_b.tau.value == 0.1 and {k: v.robust_accuracy for k, v in by_b.models["a"].eps.items()} == own
    assert main(["report", str(a.path), str(b.path), "-o", str(tmp_path / "rep_t"), "--tau", "0.2"]) == 0
    assert "every robust accuracy at tau 0.200, given with --tau" in capsys.readouterr().out
    assert main(["report", str(a.path), "-o", str(tmp_path / "rep_x"), "--tau-from", "zz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tau-from 'zz': no such model in the report (models: a)" in err
    assert not (tmp_path / "rep_x").exists()


def test_a_point_outside_the_ball_or_box_never_counts_as_the_worst_case():
    from rog.evaluate.robustness import summarize
    from rog.results import AttackRecord, Score
    clean = {"a": Score(0.8, [0.8]), "b": Score(0.6, [0.6])}

    def rec(case, attack, dice, ok=True, box=True):
        return AttackRecord(case, attack, f"{attack}@5", 8.0, 5, dice, [dice], dice < 0.35, 8.0, ok, box, True)
    records = [rec("a", "apgd-ce", 0.5), rec("a", "square", 0.1, ok=False),  # square left the ball
               rec("b", "apgd-ce", 0.0, box=False)]  # b: no valid point at all
    s = summarize(records, clean, 0.35)
    e = s.eps["8.0"]
    assert e.worst_case_dice == (0.5 + 0.6) / 2 and e.robust_accuracy == 1.0  # b keeps its clean Dice
    assert e.attacks == {"apgd-ce@5": 0.5}  # the invalid points are in no attack's mean either
