import json
import subprocess
import sys

from rog.cli import main


def test_synth_plan_preprocess_summary_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "SynthCT"
    assert main(["synth", str(data), "--cases", "3", "--test-cases", "1", "--seed", "2"]) == 0
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
