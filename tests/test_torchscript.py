"""A foreign model shipped as TorchScript: predicted and attacked with one command from its file
(no factory, no rog training), its identity (file name and weights hash) in what it writes."""
import json

import numpy as np
import pytest
import torch

from rog.atomic import file_hash
from rog.cli import main
from rog.data.io import read_label, write_volume
from rog.rundir import PredictionsDir, ResultsDir
from tests.test_predictor import Oracle, _identity_plan


@pytest.fixture
def scripted(tmp_path):
    """The `Oracle` (reads the label back from 100 * label) as a TorchScript file."""
    path = tmp_path / "oracle.pt"
    torch.jit.save(torch.jit.script(Oracle()), str(path))
    return path


def test_a_torchscript_model_predicts_from_its_file_alone(tmp_path, scripted, capsys):
    label = np.zeros((16, 18, 10), np.uint8)
    label[4:12, 5:13, 2:8] = 1
    label[6:9, 7:10, 3:6] = 2
    affine = np.diag([0.9, 1.1, 2.5, 1.0])
    write_volume(tmp_path / "in" / "c0.nii.gz", 100.0 * label + 7.0, affine)
    _identity_plan([0.9, 1.1, 2.5]).save(tmp_path / "plan.json")
    common = ["--plan", str(tmp_path / "plan.json"), "-i", str(tmp_path / "in"), "--device", "cpu",
              "--postprocess", "off"]
    assert main(["predict", "--checkpoint", str(scripted), "-o", str(tmp_path / "out"), *common]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "c0.nii.gz")[0], label)
    record = json.loads(PredictionsDir(tmp_path / "out").provenance.read_text())
    assert record["models"] == ["torchscript:oracle.pt"] and record["weights"] == [file_hash(scripted)]
    capsys.readouterr()
    # a TorchScript file is a whole model: a factory beside it is a contradiction, said in one line
    assert main(["predict", "--model", "rog", "--checkpoint", str(scripted), "-o", str(tmp_path / "o2"), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "oracle.pt: a TorchScript file is the whole model: give it without --model" in err


def test_a_torchscript_model_is_attacked_and_named_in_the_results(prepared, tmp_path, scripted):
    wd, _ = prepared
    out = tmp_path / "res"
    assert main(["attack", "--checkpoint", str(scripted), "--plan", str(wd.plan), "--data", str(wd.preprocessed),
                 "--eps", "8", "--attacks", "pgd", "--iterations", "1", "--max-cases", "1", "--device", "cpu",
                 "-o", str(out), "-q"]) in (0, 1)  # an oracle of another task may fail a validity check
    results = ResultsDir(out).read()
    assert results.provenance.model == "torchscript:oracle.pt"
    assert results.provenance.weights == file_hash(scripted)
    assert results.meta.model.model == "torchscript:oracle.pt" and results.records
