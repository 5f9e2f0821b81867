import json

import pytest
import torch
from torch import nn

from rog.attacks.ensemble import BenchCase, Benchmark, BenchmarkConfig
from rog.cli import main
from rog.workdir import run_preprocessing


def _cases(model, n=3, size=(16, 16, 16)):
    torch.manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            y = model(x).argmax(1)
        lo, hi = x.amin((2, 3, 4), keepdim=True), x.amax((2, 3, 4), keepdim=True)
        out.append(BenchCase(f"c{i}", x, y, lo, hi))
    return out


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 3, 3, padding=1))


def test_runner_records_worst_case_checks_and_skips(net, tmp_path):
    cfg = BenchmarkConfig(eps=[4, 16], attacks=["apgd-ce", "apgd-t", "square", "pgd"], iters=[3], queries=[8])
    doc = Benchmark(net, 3, cfg, tmp_path, progress=False).run(_cases(net))
    recs = doc["records"]
    assert {r["skipped"] for r in recs if r.get("skipped")} == {"apgd-t needs at least 4 classes, the task has 3"}
    done = [r for r in recs if not r.get("skipped")]
    assert len(done) == 3 * 2 * 3 and all(r["in_ball"] and r["in_box"] and r["finite"] for r in done)
    s = doc["summary"]
    for eps in ("4.0", "16.0"):
        per_case = {}
        for r in done:
            if r["eps"] == float(eps):
                per_case[r["case"]] = min(per_case.get(r["case"], 1), r["dice"])
        assert s["eps"][eps]["worst_case_dice"] == pytest.approx(sum(per_case.values()) / 3)
        assert s["eps"][eps]["robust_accuracy"] == pytest.approx(sum(d >= s["tau"] for d in per_case.values()) / 3)
    assert s["tau"] == pytest.approx(0.5)  # clean Dice 1 (labels are the model's own predictions)
    names = {c["name"]: c["status"] for c in doc["checks"]}
    assert names["ball, box and finite"] == "pass" and names["deterministic model"] == "pass"
    assert names["input gradients"] == "pass" and "large-eps sanity" in names
    assert (tmp_path / "results.csv").read_text().startswith("case,attack,eps")
    assert doc["threat"]["norm"] == "linf"


def test_runner_resumes_without_redoing_finished_work(net, tmp_path):
    cfg = BenchmarkConfig(eps=[8], attacks=["pgd"], iters=[2])
    cases = _cases(net)
    Benchmark(net, 3, cfg, tmp_path, progress=False).run(cases[:2])
    first = json.loads((tmp_path / "results.json").read_text())["records"]
    calls = []
    original = net.forward
    net.forward = lambda x: calls.append(1) or original(x)
    doc = Benchmark(net, 3, cfg, tmp_path, progress=False).run(cases)
    assert doc["records"][:2] == first and len(doc["records"]) == 3
    with pytest.raises(ValueError, match="different configuration"):
        Benchmark(net, 3, BenchmarkConfig(eps=[4], attacks=["pgd"], iters=[2]), tmp_path, progress=False).run(cases)


def test_volume_scope_and_sharded_ranks(net, tmp_path, monkeypatch):
    cfg = BenchmarkConfig(eps=[8], attacks=["apgd-ce"], iters=[2], scope="volume")
    cases = _cases(net, n=3, size=(20, 20, 12))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert Benchmark(net, 3, cfg, tmp_path, patch=(16, 16, 8), progress=False).run(cases) == {}
    monkeypatch.setenv("RANK", "0")
    doc = Benchmark(net, 3, cfg, tmp_path, patch=(16, 16, 8), progress=False).run(cases)
    assert sorted(r["case"] for r in doc["records"]) == ["c0", "c1", "c2"]  # merged shards
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
    assert len(doc["clean"]) == 2 and doc["meta"]["label"] == "rog"
    text = capsys.readouterr().out
    assert "robust accuracy" in text and "check" in text
