"""Preprocessed cases record the plan that shaped them: a changed plan makes them again, a
plan given other options is refused by name, and a model is never fed another plan's cases."""
import json

import pytest

from rog.cli import main
from rog.data.preprocess import load_case
from rog.pipeline.stages import run_preprocessing


def test_cases_follow_the_plan_and_plans_are_not_silently_kept(ct_task, tmp_path, capsys):
    wd, plan, done = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    _, _, props = load_case(wd.preprocessed, done[0])
    assert props["preprocessing"]["target_spacing"] == plan.target_spacing
    first = (wd.preprocessed / f"{done[0]}.npy").stat().st_mtime_ns
    # the same plan: nothing is made again
    assert run_preprocessing(ct_task, tmp_path / "w", workers=1)[2] == []
    # `rog plan` with another option than the existing plan's: refused, the field named, nothing written
    before = wd.plan.read_text()
    capsys.readouterr()
    assert main(["plan", str(ct_task), "-w", str(wd.root), "--spacing", "2"]) == 2
    err = capsys.readouterr().err
    assert "target_spacing" in err and "--force" in err and err.count("\n") == 1
    assert wd.plan.read_text() == before
    assert main(["plan", str(ct_task), "-w", str(wd.root), "--width", str(plan.width)]) == 0  # agrees: kept
    # --force plans again and says what changed; preprocessing then makes every case again
    assert main(["plan", str(ct_task), "-w", str(wd.root), "--spacing", "2", "--force"]) == 0
    assert "changed: " in capsys.readouterr().out and "target_spacing" in wd.plan.read_text()
    _, new_plan, again = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    assert sorted(again) == sorted(done) and "preprocessing" in capsys.readouterr().out
    assert (wd.preprocessed / f"{done[0]}.npy").stat().st_mtime_ns != first
    assert load_case(wd.preprocessed, done[0])[2]["preprocessing"]["target_spacing"] == [2.0, 2.0, 2.0]


def test_a_model_is_never_fed_another_plans_cases(ct_task, tmp_path, capsys):
    wd, plan, _ = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    capsys.readouterr()
    plan.width = 4
    plan.target_spacing = [s * 1.5 for s in plan.target_spacing]  # not what made the cases
    plan.save(tmp_path / "plan.json")
    out = tmp_path / "att"
    args = ["attack", "--model", "rog", "--plan", str(tmp_path / "plan.json"), "--data", str(wd.preprocessed),
            "--eps", "8", "--attacks", "pgd", "--iterations", "1", "-o", str(out), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "preprocessed under another plan" in err and "target_spacing" in err and not out.exists()
    # cases from before plans were recorded are refused as well
    case = wd.preprocessed / "synthct_004.json"
    props = json.loads(case.read_text())
    props.pop("preprocessing")
    case.write_text(json.dumps(props))
    plan.target_spacing = [s / 1.5 for s in plan.target_spacing]
    plan.save(tmp_path / "plan.json")
    assert main(args) == 2 and "no plan recorded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plan", "--width", "0", str(ct_task)])
