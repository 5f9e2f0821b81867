"""Every file rog writes and reads back, truncated (a killed process, a full disk, a copy cut
short), ends the command that reads it in one line naming the file, exit 2, with nothing
written; and no module reads such a file around the one set of readers (`rog.errors`)."""
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from rog.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "rog"


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(ct_task, tmp_path_factory):
    """A work directory with a trained run (post-processing decided), attack results with
    their qualitative arrays, and predictions made with provenance."""
    root = tmp_path_factory.mktemp("finished")
    wd = root / "w"
    assert main(["-q", "train", str(ct_task), "-w", str(wd), "--name", "r", "--width", "4", "--epochs", "1",
                 "--iterations", "1", "--batch-size", "1", "--device", "cpu"]) == 0
    run = wd / "runs" / "r"
    (run / "test_eval.json").write_text('{"mean": {"dice": [0.5, 0.5]}}')
    assert main(["-q", "attack", str(run), "--eps", "8", "--attacks", "pgd", "--iterations", "1",
                 "-o", str(root / "att")]) in (0, 1)
    assert main(["-q", "predict", str(run), "-i", str(ct_task), "-o", str(root / "pred"), "--disable-tta"]) == 0
    return root, ct_task


def _case(wd: Path) -> str:
    return sorted((wd / "preprocessed").glob("*_seg.npy"))[0].name[:-len("_seg.npy")]


# file (relative to the copied root) -> the command that reads it back
FILES = {
    "run config": ("w/runs/r/config.json", ["attack", "{run}"]),
    "run splits": ("w/runs/r/splits.json", ["train", "{task}", "-w", "{wd}", "--name", "r", "--resume"]),
    "post-processing decision": ("w/runs/r/postprocessing.json", ["predict", "{run}", "-i", "{task}", "-o", "{new}"]),
    "test scores": ("w/runs/r/test_eval.json", ["attack", "{run}"]),
    "fingerprint": ("w/fingerprint.json", ["plan", "{task}", "-w", "{wd}", "--width", "8"]),
    "preprocessed case json": ("w/preprocessed/{case}.json", ["attack", "{run}", "--cases", "{case}"]),
    "preprocessed case image": ("w/preprocessed/{case}.npy", ["attack", "{run}", "--cases", "{case}"]),
    "results": ("att/results.json", ["report", "{root}/att", "-o", "{new}"]),
    "qualitative arrays": ("att/qualitative.npz", ["report", "{root}/att", "-o", "{new}"]),
    "predictions provenance": ("pred/rog_predict.json", ["predict", "{run}", "-i", "{task}", "-o", "{root}/pred",
                                                        "--continue"]),
    "checkpoint": ("w/runs/r/checkpoint_best.pt", ["attack", "{run}"]),
}
ATTACK = ["--eps", "8", "--attacks", "pgd", "--iterations", "1", "-o", "{new}", "--device", "cpu"]


@pytest.mark.parametrize("what", list(FILES))
def test_a_truncated_file_is_one_line_and_nothing_is_written(finished, tmp_path, capsys, what):
    root0, task = finished
    root = shutil.copytree(root0, tmp_path / "copy", symlinks=True)
    case = _case(root / "w")
    relative, argv = FILES[what]
    target = root / relative.format(case=case)
    data = target.read_bytes()
    target.write_bytes(data[:len(data) // 2])
    before = _snapshot(root)
    fill = {"run": root / "w/runs/r", "task": task, "wd": root / "w", "new": tmp_path / "new", "root": root,
            "case": case}
    argv = [a.format(**fill) for a in argv + (ATTACK if argv[0] == "attack" else [])]
    code = main(["-q", *argv])  # no progress bars: stderr holds what went wrong, alone
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (what, err)
    # the last line names the file (a note may come before it, as resuming says what it resumes)
    assert err and "Traceback" not in "\n".join(err) and str(target) in err[-1] and "error" in err[-1], (what, err)
    assert sum("error" in line for line in err) == 1, (what, err)
    assert not (tmp_path / "new").exists() and _snapshot(root) == before, what


def test_files_are_read_back_only_through_the_readers():
    # rog.errors' read_json / read_json_object / parse_json / read_arrays name the file on
    # every failure; a bare json.load(s) or np.load elsewhere would end in a traceback
    bare = re.compile(r"\bjson\.loads?\((?!json\.dumps)|\bnp\.load\(")
    found = [f"{p.relative_to(SRC)}:{i}" for p in sorted(SRC.rglob("*.py")) if p.name != "errors.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert not found, found
