import json
import subprocess
import sys

from rog.cli import main


def test_synth_plan_preprocess_summary_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "SynthCT"
    assert main(["synth", str(data), "--num-cases", "3", "--num-test-cases", "1", "--seed", "2"]) == 0
    assert main(["check", str(data), "-q"]) == 0
    wd = tmp_path / "work"
    assert main(["plan", str(data), "-w", str(wd), "--width", "8", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "patch" in out and "strides s0/s1/s2" in out and (wd / "plan.json").is_file()
    assert main(["preprocess", str(data), "-w", str(wd), "--workers", "1"]) == 0
    assert len(list((wd / "preprocessed").glob("*.json"))) == 4
    capsys.readouterr()
    assert main(["summary", "--plan", str(wd / "plan.json"), "--models", "rog", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["model"] == "rog" and rows[0]["parameters"] > 0 and rows[0]["gflops"] > 0


def test_summary_explicit_reproduces_the_paper_count(capsys):
    assert main(["summary", "--channels", "4", "--classes", "4", "--strides", "1", "2", "2",
                 "--input", "96", "--models", "rog", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["parameters"] == 2_596_556 and abs(row["gflops"] - 79.31) < 0.4


def test_errors_are_reported_with_the_file_and_a_nonzero_exit(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rog", "plan", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "dataset.json: not found" in r.stderr and "Traceback" not in r.stderr


def _parsers():
    import argparse
    from rog.cli.parser import build_parser
    p = build_parser()
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return {"rog": p, **subs.choices}


def test_every_option_is_documented_with_its_default():
    import argparse
    from rog.cli.types import Help
    skip = (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)
    missing, no_default = [], []
    for name, parser in _parsers().items():
        for action in parser._actions:
            if isinstance(action, skip) or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}")
            elif (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                  and "default" not in Help("rog")._get_help_string(action)):
                no_default.append(f"{name} {action.option_strings}")
        parser.format_help()  # every help text renders
    assert not missing and not no_default, (missing, no_default)
    assert len(_parsers()) == 18  # rog and its 17 commands


def test_renamed_options_keep_their_old_spelling_hidden():
    import re
    parsers = _parsers()
    for command, old, new, dest, value in (("synth", "--cases", "--num-cases", "cases", 3),
                                           ("attack", "--iters", "--iterations", "iters", [3]),
                                           ("attack", "--label", "--name", "label", "x"),
                                           ("train", "--iterations", "--iterations-per-epoch", "iterations", 3)):
        args = ["ds"] if command == "train" else []
        text = [str(v) for v in (value if isinstance(value, list) else [value])]
        assert getattr(parsers[command].parse_args([*args, old, *text]), dest) == value
        assert getattr(parsers[command].parse_args([*args, new, *text]), dest) == value
        shown = parsers[command].format_help()
        assert new in shown and not re.search(rf"(?<![\w-]){old}\b(?!-)", shown), (command, old)


def test_version_debug_and_quiet_work_anywhere(tmp_path, capsys, monkeypatch):
    import os
    import pytest
    from rog.data.dataset import DatasetError
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("rog ")
    assert main(["plan", str(tmp_path)]) == 2  # one line, no traceback
    assert "dataset.json: not found" in capsys.readouterr().err
    for argv in (["--debug", "plan", str(tmp_path)], ["plan", str(tmp_path), "--debug"]):
        with pytest.raises(DatasetError):
            main(argv)
    from rog.progress import progress_bar
    import rog.cli.commands
    seen = []
    monkeypatch.setattr(rog.cli.commands, "cmd_check", lambda a: seen.append(progress_bar(range(3)).disable))
    monkeypatch.delenv("ROG_QUIET", raising=False)
    main(["check", str(tmp_path), "-q"])
    main(["-q", "check", str(tmp_path)])
    main(["check", str(tmp_path)])
    assert seen == [True, True, False] and "ROG_QUIET" not in os.environ  # bars off while -q runs, then back


def test_a_failed_validity_check_is_printed_and_sets_the_exit_code(capsys):
    from types import SimpleNamespace
    from rog.cli.sweeps import _checks
    from rog.results import Check
    ok = SimpleNamespace(results=SimpleNamespace(checks=[Check("deterministic model", "pass", "fine")]), out="o")
    assert _checks(ok) == 0 and capsys.readouterr().err == ""
    bad = SimpleNamespace(results=SimpleNamespace(checks=[Check("input gradients", "fail", "zero on c1")]), out="o")
    assert _checks(bad) == 1
    assert "validity check failed: input gradients: zero on c1" in capsys.readouterr().err


def test_devices_are_checked_with_one_line():
    import pytest
    import torch
    from rog.devices import DeviceError, resolve_device
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                           "mps" if torch.backends.mps.is_available() else "cpu")
    for bad, why in (("gpu", "not a device"), ("xla", "rog runs on")):
        with pytest.raises(DeviceError, match=f"--device {bad}: {why}"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")
