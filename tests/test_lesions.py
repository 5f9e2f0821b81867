"""Lesion-level damage (`rog.evaluate.lesions`): components matched by hand on small maps, and
what the attack records and summaries say of them."""
import numpy as np
import pytest

from rog.evaluate.lesions import match_lesions


def test_lesions_are_matched_counted_and_measured_as_worked_by_hand():
    ref = np.zeros((12, 12, 4), np.uint8)
    ref[1:4, 1:4, :] = 1  # lesion A, 36 voxels
    ref[7:9, 7:9, :] = 1  # lesion B, 16 voxels
    ref[1:3, 8:11, 1:3] = 2  # one class-2 structure
    pred = np.zeros_like(ref)
    pred[1:4, 1:4, :2] = 1  # half of A: IoU 0.5, detected
    pred[8, 8, 0] = 1  # one voxel of B: IoU 1/16 < 0.1, so B is missed and this component invented
    pred[10:12, 0:2, :] = 1  # invented, far from any lesion
    pred[1:3, 8:11, 1:3] = 2  # class 2 exact
    got = match_lesions(pred, ref, 3, spacing=(2.0, 2.0, 2.5))
    assert got["detected"] == [1, 1] and got["missed"] == [1, 0] and got["invented"] == [2, 0]
    assert got["f1"] == pytest.approx([2 * 1 / (2 + 1 + 2), 1.0])
    assert got["volume"] == pytest.approx([(18 + 1 + 16) * 0.01, 12 * 0.01]) and got["unit"] == "mL"  # 10 mm^3 a voxel
    # a looser match finds B: its one voxel then counts
    assert match_lesions(pred, ref, 3, overlap=0.05)["missed"] == [0, 0]
    # nothing anywhere: no lesion, NaN F1, volumes in voxels without a spacing
    empty = match_lesions(np.zeros_like(ref), np.zeros_like(ref), 3)
    assert empty["detected"] == [0, 0] and np.isnan(empty["f1"]).all() and empty["unit"] == "voxels"
    # the ignore label (K) holds no lesion of either map
    ignored = ref.copy()
    ignored[10:12, 0:2, :] = 3
    assert match_lesions(pred, ignored, 3)["invented"] == [1, 0]


def test_attack_records_count_lesions_against_the_clean_prediction(segmenter3, tmp_path):
    import torch

    from rog.bench import BenchCase, Benchmark, BenchmarkConfig
    from tests.trained import sphere_volumes
    x, y = sphere_volumes(2, 16, 3, seed=11)
    cases = [BenchCase(f"s{i}", x[i:i + 1], y[i:i + 1], torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1))
             for i in range(2)]
    cfg = BenchmarkConfig(eps=[16], attacks=["apgd-ce", "pgd"], iters=[3], scope="volume")
    doc = Benchmark(segmenter3, 3, cfg, tmp_path, progress=False, spacing=(2.0, 2.0, 2.0)).run(cases)
    with torch.no_grad():
        clean = {c.name: segmenter3(c.x).argmax(1)[0].numpy() for c in cases}
    for r in doc.records:
        case = next(c for c in cases if c.name == r.case)
        mine = match_lesions(clean[r.case], case.y[0].numpy(), 3, (2.0, 2.0, 2.0))
        assert r.lesions["clean_missed"] == mine["missed"] and r.lesions["unit"] == "mL"
        assert r.lesions["volume_change"] == pytest.approx([a - b for a, b in zip(r.lesions["volume"], mine["volume"])])
    e = doc.summary.eps["16.0"]
    assert e.lesions_invented > 0 and e.lesion_robust_accuracy < 1  # at 16/255 the attacks do lose and invent lesions
    worst = {c: min((r for r in doc.records if r.case == c), key=lambda r: r.dice) for c in ("s0", "s1")}
    assert e.lesions_missed == sum(sum(w.lesions["missed"]) for w in worst.values())
    assert e.lesion_robust_accuracy == pytest.approx(np.mean([
        not any(sum(r.lesions["missed"]) > sum(r.lesions["clean_missed"]) for r in doc.records if r.case == c)
        for c in ("s0", "s1")]))


def test_the_report_shows_the_lesions_missed_and_invented_per_eps(net, tmp_path):
    from rog.bench import Benchmark, BenchmarkConfig
    from rog.report.build import build_report
    from tests.conftest import self_labelled_cases
    cases = self_labelled_cases(net, 2, (12, 12, 12), seed=0)
    doc = Benchmark(net, 3, BenchmarkConfig(eps=[4, 16], attacks=["pgd"], iters=[3]), tmp_path / "att",
                    progress=False).run(cases)
    build_report([tmp_path / "att"], tmp_path / "rep")
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<h2>Lesions under attack</h2>" in html
    for key in ("4.0", "16.0"):  # each eps's cell is the summary's counts
        e = doc.summary.eps[key]
        assert f"<td>{e.lesions_missed} / {e.lesions_invented} ({e.lesion_robust_accuracy:.2f})</td>" in html
    assert doc.summary.eps["16.0"].lesions_invented + doc.summary.eps["16.0"].lesions_missed > 0  # it counted some
