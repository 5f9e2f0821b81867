import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from rog.bench import Benchmark, BenchmarkConfig
from rog.cli import main
from rog.pipeline.stages import run_preprocessing
from tests.conftest import self_labelled_cases


def _cases(model, n=3, size=(16, 16, 16)):
    return self_labelled_cases(model, n, size, seed=0)


def test_runner_records_worst_case_checks_and_runs_apgd_t_on_three_classes(net, tmp_path):
    cfg = BenchmarkConfig(eps=[4, 16], attacks=["apgd-ce", "apgd-t", "square", "pgd"], iters=[3], queries=[8])
    doc = Benchmark(net, 3, cfg, tmp_path, progress=False).run(_cases(net))
    recs = doc.records
    assert not any(r.skipped for r in recs)  # APGD-T runs on three classes
    done = recs
    assert len(done) == 3 * 2 * 4 and all(r.in_ball and r.in_box and r.finite for r in done)
    s = doc.summary
    for eps in ("4.0", "16.0"):
        per_case = {}
        for r in done:
            if r.eps == float(eps):
                per_case[r.case] = min(per_case.get(r.case, 1), r.dice)
        assert s.eps[eps].worst_case_dice == pytest.approx(sum(per_case.values()) / 3)
        for case, attack in s.eps[eps].found_by.items():  # each case's worst attack named
            assert attack == "clean" and per_case[case] >= doc.clean[case].dice or next(
                r.dice for r in done if (r.case, r.eps, r.attack_id) == (case, float(eps), attack)) == per_case[case]
        assert s.eps[eps].robust_accuracy == pytest.approx(sum(d >= s.tau for d in per_case.values()) / 3)
    assert s.tau == pytest.approx(0.5)  # clean Dice 1 (labels are the model's own predictions)
    names = {c.name: c.status for c in doc.checks}
    assert names["ball, box and finite"] == "pass" and names["deterministic model"] == "pass"
    assert names["input gradients"] == "pass" and "large-eps sanity" in names
    assert (tmp_path / "results.csv").read_text().startswith("case,attack,eps")
    assert doc.threat["norm"] == "linf"
    # the file is the document, read back whole
    from rog.rundir import ResultsDir
    assert ResultsDir(tmp_path).read() == doc


def test_runner_resumes_without_redoing_finished_work(net, tmp_path, capsys):
    cfg = BenchmarkConfig(eps=[8], attacks=["pgd"], iters=[2])
    cases = _cases(net)
    full = Benchmark(net, 3, cfg, tmp_path, progress=False).run(cases).records
    # the cost is said before anything runs: PGD's 2 steps are 6 forward-pass equivalents a case
    assert "attack sweep: 6 forward-pass equivalents per case, 18 to run over 3 case(s)" in capsys.readouterr().out
    # a run killed after its second case: the results file then holds two cases' records
    doc = json.loads((tmp_path / "results.json").read_text())
    doc.update(records=doc["records"][:2], complete=False, summary=None, checks=[])
    (tmp_path / "results.json").write_text(json.dumps(doc))
    attacked = []
    original = net.forward
    net.forward = lambda x: attacked.append(x.shape) or original(x)
    resumed = Benchmark(net, 3, cfg, tmp_path, progress=False).run(cases).records
    assert resumed[:2] == full[:2] and len(resumed) == 3
    assert "6 to run over 3 case(s)" in capsys.readouterr().out  # only the unfinished case's work
    assert replace(resumed[2], seconds=0) == replace(full[2], seconds=0)
    with pytest.raises(ValueError, match="different configuration"):
        Benchmark(net, 3, BenchmarkConfig(eps=[4], attacks=["pgd"], iters=[2]), tmp_path, progress=False).run(cases)


def test_a_folder_written_before_a_configuration_field_existed_resumes(net, tmp_path):
    # results of a rog that had no eps_unit / eps_channels resume under their defaults, and
    # only under them
    cfg = BenchmarkConfig(eps=[8], attacks=["pgd"], iters=[1])
    cases = _cases(net, n=2)
    full = Benchmark(net, 3, cfg, tmp_path, progress=False).run(cases).records
    doc = json.loads((tmp_path / "results.json").read_text())
    for key in ("eps_unit", "eps_channels"):
        del doc["provenance"]["config"][key]
    doc.update(records=doc["records"][:1], complete=False, summary=None, checks=[])
    (tmp_path / "results.json").write_text(json.dumps(doc))
    resumed = Benchmark(net, 3, cfg, tmp_path, progress=False).run(cases).records
    assert [replace(r, seconds=0) for r in resumed] == [replace(r, seconds=0) for r in full]
    (tmp_path / "results.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="different configuration"):
        Benchmark(net, 3, replace(cfg, eps_unit="sd"), tmp_path, progress=False).run(cases)


def test_a_run_killed_inside_a_case_keeps_its_finished_attacks(net, tmp_path, monkeypatch):
    # killed at the third job of the first case: the two done are kept, the resumed run makes
    # only the rest (and remakes the input of an earlier worst attack for the report's panels),
    # and ends with the records and panels of a run never interrupted
    from rog.bench.runner import Benchmark as Runner
    from rog.rundir import ResultsDir
    cfg = BenchmarkConfig(eps=[4, 8], attacks=["pgd", "apgd-ce"], iters=[2])
    cases = _cases(net, n=2)
    full = Benchmark(net, 3, cfg, tmp_path / "full", progress=False).run(cases)
    calls, do = [], Runner._do

    def killed(self, case, job, tau):
        calls.append((case.name, job))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return do(self, case, job, tau)

    monkeypatch.setattr(Runner, "_do", killed)
    with pytest.raises(KeyboardInterrupt):
        Benchmark(net, 3, cfg, tmp_path / "cut", progress=False).run(cases)
    kept = ResultsDir(tmp_path / "cut").read().records
    assert [(r.case, r.attack, r.eps) for r in kept] == [("c0", "pgd", 4.0), ("c0", "apgd-ce", 4.0)]
    calls.clear()
    monkeypatch.setattr(Runner, "_do", lambda self, case, job, tau: calls.append((case.name, job)) or do(
        self, case, job, tau))
    resumed = Benchmark(net, 3, cfg, tmp_path / "cut", progress=False).run(cases)
    new = [(c, j.attack, j.eps) for c, j in calls]
    assert new[:2] == [("c0", "pgd", 8.0), ("c0", "apgd-ce", 8.0)] and len([c for c in new if c[0] == "c1"]) == 4
    assert len(new) <= 2 + 4 + 1  # at most eps 4's worst attack made again
    assert [replace(r, seconds=0) for r in resumed.records] == [replace(r, seconds=0) for r in full.records]
    ours, theirs = ResultsDir(tmp_path / "cut").read_qualitative(), ResultsDir(tmp_path / "full").read_qualitative()
    assert ours.keys() == theirs.keys() == {"4.0", "8.0"}
    for eps, panel in theirs.items():
        assert all(np.array_equal(panel[k], ours[eps][k]) for k in panel), eps


def test_volume_scope_and_sharded_ranks(net, tmp_path, monkeypatch):
    cfg = BenchmarkConfig(eps=[8], attacks=["apgd-ce"], iters=[2], scope="volume")
    cases = _cases(net, n=3, size=(20, 20, 12))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert Benchmark(net, 3, cfg, tmp_path, patch=(16, 16, 8), progress=False).run(cases) is None
    monkeypatch.setenv("RANK", "0")
    doc = Benchmark(net, 3, cfg, tmp_path, patch=(16, 16, 8), progress=False).run(cases)
    assert sorted(r.case for r in doc.records) == ["c0", "c1", "c2"]  # merged shards
    assert (tmp_path / "results.rank0.json").is_file() and (tmp_path / "results.rank1.json").is_file()


def test_attack_command_on_any_model(ct_task, tmp_path, capsys):
    wd, plan, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    plan.width = 4
    plan.save(tmp_path / "plan.json")
    out = tmp_path / "att"
    code = main(["attack", "--model", "rog", "--plan", str(tmp_path / "plan.json"), "--data", str(wd.preprocessed),
                 "--eps", "8", "--attacks", "apgd-ce", "fab-t", "--iters", "2", "--max-cases", "2", "-o", str(out),
                 "--device", "cpu"])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    # default cases: the task's labelled test case, never a training one
    assert list(doc["clean"]) == ["synthct_004"] and doc["meta"]["cases_source"] == "test"
    assert doc["meta"]["label"] == "rog" and doc["meta"]["model"]["parameters"] > 0
    text = capsys.readouterr().out
    assert "robust accuracy" in text and "check" in text and "labelled test cases" in text


def test_l2_records_pass_the_ball_check_and_linf_only_attacks_are_skipped(net, tmp_path):
    cfg = BenchmarkConfig(eps=[8], attacks=["apgd-ce", "fab-t", "square"], iters=[2], queries=[4], norm="l2")
    doc = Benchmark(net, 3, cfg, tmp_path, progress=False).run(_cases(net, n=2))
    skipped = {r.attack for r in doc.records if r.skipped}
    ran = doc.measured()
    assert skipped == {"fab-t", "square"} and len(ran) == 2
    assert all(r.in_ball and r.norm <= 8 * (1 + 1e-5) for r in ran)
    assert {c.name: c.status for c in doc.checks}["ball, box and finite"] == "pass"


def test_results_folder_refuses_other_cases_or_weights_and_records_the_panels(net, tmp_path):
    cfg = BenchmarkConfig(eps=[8, 16], attacks=["pgd"], iters=[2])
    cases = _cases(net)
    Benchmark(net, 3, cfg, tmp_path, progress=False, weights="abc").run(cases[:2])
    before = (tmp_path / "results.json").read_bytes()
    from rog.bench.records import BenchError
    from rog.rundir import ResultsDir
    with pytest.raises(BenchError, match="different case list"):
        Benchmark(net, 3, cfg, tmp_path, progress=False, weights="abc").run(cases)
    with pytest.raises(BenchError, match="different model weights"):
        Benchmark(net, 3, cfg, tmp_path, progress=False, weights="xyz").run(cases[:2])
    assert (tmp_path / "results.json").read_bytes() == before  # nothing overwritten
    # two models without a checkpoint (factories with their own weights) are told apart by name
    from rog.results import Meta, ModelInfo
    named = lambda name: Meta(model=ModelInfo(name, 1, 0.0, [16, 16, 16]))  # noqa: E731
    Benchmark(net, 3, cfg, tmp_path / "f", progress=False, meta=named("pkg.a:factory")).run(cases[:2])
    with pytest.raises(BenchError, match=r"written by another model \(pkg.a:factory, not pkg.b:factory\)"):
        Benchmark(net, 3, cfg, tmp_path / "f", progress=False, meta=named("pkg.b:factory")).run(cases[:2])
    assert ResultsDir(tmp_path / "f").read().provenance.model == "pkg.a:factory"
    panels = ResultsDir(tmp_path).read_qualitative()
    assert set(panels) == {"8.0", "16.0"}  # the worst attack on the first case, per eps
    p = panels["16.0"]
    assert p["image"].shape == p["adv"].shape == (16, 16) and 0 <= int(p["slice"]) < 16
    # the slice with the most labelled voxels (every model of the case on one slice), the winning
    # attack named, the perturbation on the threat's /255 scale (the box [0, 1] here: 255 x delta)
    first = min(cases[:2], key=lambda c: c.name)
    assert int(p["slice"]) == int((first.y[0] > 0).sum(dim=(0, 1)).argmax())
    records = ResultsDir(tmp_path).read().records
    worst = min((r for r in records if r.case == first.name and r.eps == 16.0), key=lambda r: r.dice)
    assert str(p["winner"]) == worst.attack_id == "pgd@2" and 8 < np.abs(p["delta"]).max() <= 16 + 1e-3


def test_in_memory_ensemble_keeps_the_per_instance_worst_case(net, monkeypatch):
    import rog.bench.ensemble as ensemble
    from rog.bench import Ensemble
    from rog.evaluate.metrics import dice_batch
    cases = _cases(net, n=2, size=(12, 12, 12))
    x, y = torch.cat([c.x for c in cases]), torch.cat([c.y for c in cases])
    given, make = [], ensemble.make_attack
    monkeypatch.setattr(ensemble, "make_attack", lambda *a, **kw: given.append(kw["threshold"]) or make(*a, **kw))
    ens = Ensemble(net, eps=12, attacks=["apgd-ce", "pgd", "square"], iters=3, queries=8)
    x_adv = ens(x, y)
    # every attack (FAB-T's success test among them) gets the benchmark's tau: half the mean clean Dice
    tau = sum(ens.info["clean_dice"]) / 2 / 2
    assert ens.info["tau"] == pytest.approx(tau) and given == [pytest.approx(tau)] * 3
    worst = torch.tensor(ens.info["worst_case_dice"])
    per_attack = torch.tensor([ens.info["dice"][a] for a in ("apgd-ce", "pgd", "square")])
    torch.testing.assert_close(worst, per_attack.min(0).values)
    assert (worst < 1).all() and set(ens.info["worst_attack"]) <= {"apgd-ce", "pgd", "square"}
    with torch.no_grad():
        torch.testing.assert_close(dice_batch(net(x_adv).argmax(1), y, 3), worst, atol=1e-6, rtol=0)
    lo, hi = x.amin((2, 3, 4), True), x.amax((2, 3, 4), True)
    assert ((x_adv - x).abs() <= 12 / 255 * (hi - lo) + 1e-6).all()


def test_default_cases_prefer_test_then_held_out_then_validation(ct_task, tmp_path):
    from rog.bench import default_cases
    from rog.data.preprocess import labelled_cases
    from rog.rundir import RunDir
    from rog.train.data import holdout_size, make_splits
    wd, _, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    test = labelled_cases(wd.preprocessed, "test")
    assert test == ["synthct_004"] and "synthct_004" not in labelled_cases(wd.preprocessed)  # never trained on
    assert default_cases(wd.preprocessed) == (test, "test")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.splits.write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c"]}))
    for p in wd.preprocessed.glob("synthct_004*"):
        p.unlink()
    assert default_cases(wd.preprocessed, run) == (["c"], "held-out")
    run.splits.write_text(json.dumps({"train": ["a"], "val": ["b"]}))
    assert default_cases(wd.preprocessed, run) == (["b"], "validation")
    cases = [f"c{i}" for i in range(20)]
    assert holdout_size(20, 1) == 0 and holdout_size(20, 0) == 2 and holdout_size(4, 0) == 0
    for split in make_splits(cases, 5, seed=0, holdout=2):
        assert len(split["test"]) == 2 and not set(split["test"]) & (set(split["train"]) | set(split["val"]))
        assert sorted(split["train"] + split["val"] + split["test"]) == sorted(cases)
    assert make_splits(cases, 5, 0)[1]["val"] == make_splits(cases, 5, 0, 0)[1]["val"]


def test_the_attack_library_stands_alone_and_only_rundir_names_run_files():
    import ast
    from pathlib import Path
    src = Path(__file__).resolve().parents[1] / "src" / "rog"
    for f in (src / "attacks").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(m.startswith(("rog.infer", "rog.data", "rog.bench")) for m in mods), (f, mods)
    names = ("plan.json", "config.json", "splits.json", "postprocessing.json", "results.json", "results.csv",
             "test_eval", "test_predictions", "log.csv", "curves.png", "qualitative.npz", "fingerprint.json")
    for f in src.rglob("*.py"):
        if f.name == "rundir.py" or f.parent.name == "external":  # external/ spells other tools' layouts
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value
                assert v not in names and not v.startswith(("checkpoint_", "results.rank")), (f, v)


def test_the_report_renders_without_torch():
    # `rog report` reads what the benchmark wrote: JSON and the qualitative arrays, no model
    import subprocess
    import sys
    code = ("import sys, rog.report.build; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'rog.bench', 'rog.attacks'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out[:300]


def test_the_progress_bar_weighs_each_job_by_its_expected_cost():
    from rog.attacks.registry import expected_cost
    from rog.bench.runner import AttackJob
    assert expected_cost("square", 500, 3) == 500 and expected_cost("apgd-ce", 5, 3) == 15
    assert expected_cost("apgd-t", 5, 3) == 30 and expected_cost("fab-t", 5, 20) == 135  # at most 9 targets
    jobs = Benchmark.__new__(Benchmark)
    jobs.config = BenchmarkConfig(eps=[8], attacks=["standard"], iters=[5], queries=[500])
    costs = {j.attack: j.cost(3) for j in Benchmark._jobs(jobs)}
    assert costs == {"apgd-ce": 15, "apgd-dlr": 15, "fab-t": 30, "square": 500}
    assert AttackJob(8.0, "square", 500).attack_id == "square@500"


def test_quiet_and_verbose_set_what_is_said(ct_task, tmp_path, capsys):
    import logging
    from rog.messages import log
    wd, plan, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    plan.width = 4
    plan.save(tmp_path / "plan.json")
    base = ["attack", "--model", "rog", "--plan", str(tmp_path / "plan.json"), "--data", str(wd.preprocessed),
            "--eps", "8", "--attacks", "pgd", "square", "--norm", "l2", "--iterations", "1", "--device", "cpu"]
    capsys.readouterr()
    for i, (flags, info, detail) in enumerate((([], True, False), (["-v"], True, True), (["-q"], False, False))):
        main([*flags, *base, "-o", str(tmp_path / f"out{i}")])
        out = capsys.readouterr().out
        assert ("skipped: square is implemented for the linf" in out) == info, flags
        assert ("synthct_004 eps=8.0 attack=pgd budget=1: Dice 0." in out) == detail, flags
        assert "robust accuracy" in out  # the command's own result, always
    assert log.level == logging.INFO  # back to the library's default after each command
