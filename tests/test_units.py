"""Threats in the units a user measures a scan in (`rog.bench.units`): Hounsfield units on a CT
case, tissue standard deviations, and a radius per channel with one channel left untouched."""
import pytest
import torch

from rog.attacks import APGD, PGD, Square, ThreatModel
from rog.bench import Benchmark, BenchmarkConfig, BenchCase
from rog.bench.cases import load_bench_cases
from rog.bench.records import BenchError
from rog.bench.units import input_units, range_eps
from rog.data.preprocess import case_props, labelled_cases


def _ct_case(prepared):
    wd, plan = prepared
    name = labelled_cases(wd.preprocessed)[0]
    schemes = [n["scheme"] for n in plan.normalization]
    assert schemes == ["ct"]
    case = load_bench_cases(wd.preprocessed, [name], "patch", plan.val_patch_size, schemes=schemes)[0]
    return case, case_props(wd.preprocessed, name)["intensity"][0][1]


def _net(channels=1, classes=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(channels, 6, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Conv3d(6, classes, 3, padding=1))


def test_ct_attack_in_hu_equals_the_range_attack_at_the_converted_eps(prepared, tmp_path):
    case, std = _ct_case(prepared)
    assert case.hu == [pytest.approx(1 / std)]  # one HU is 1/std model-input units
    hu = 40.0
    converted = range_eps(case, hu, "hu")
    span = float((case.hi - case.lo).flatten()[0])
    assert converted == pytest.approx(hu / std / span * 255)  # a float: one channel, one radius
    net = _net()
    runs = {}
    for unit, eps in (("hu", hu), ("range", converted)):
        cfg = BenchmarkConfig(eps=[eps], attacks=["apgd-ce", "square"], iters=[3], queries=[6], eps_unit=unit)
        runs[unit] = Benchmark(net, 3, cfg, tmp_path / unit, progress=False).run([case])
    for a, b in zip(runs["hu"].records, runs["range"].records):
        assert (a.attack_id, a.dice, a.norm) == (b.attack_id, b.dice, b.norm) and a.in_ball
    assert runs["hu"].records[0].channel_eps == [pytest.approx(converted)]
    assert runs["hu"].threat["unit"] == "hu" and "Hounsfield" in runs["hu"].threat["scale"]
    # the report speaks the unit given; results in two units share no eps axis
    from rog.report.build import build_report
    from rog.results import ResultsError
    summary = build_report([tmp_path / "hu"], tmp_path / "report", table_eps=hu)
    html = (tmp_path / "report" / "report.html").read_text()
    assert summary.eps_unit == "hu" and "<th>eps 40 HU</th>" in html and "at eps 40 HU" in html
    with pytest.raises(ResultsError, match="hu and range units"):
        build_report([tmp_path / "hu", tmp_path / "range"], tmp_path / "mixed")
    # APGD's perturbation in HU: at most the radius, and reaching it (L-inf steps end on the corners)
    apgd = APGD(net, ThreatModel.exactly(converted), iters=3)
    delta_hu = (apgd(case.x, case.y, case.lo, case.hi) - case.x).abs().max() * std
    assert float(delta_hu) == pytest.approx(hu, rel=1e-4)


def test_a_channel_with_eps_zero_is_untouched_by_every_attack(tmp_path):
    torch.manual_seed(1)
    net = _net(channels=2)
    x = torch.randn(1, 2, 12, 12, 12)
    x[:, 1] = x[:, 1] * 5 + 3  # another range: the radius follows each channel's own
    with torch.no_grad():
        y = net(x).argmax(1)
    case = BenchCase("c0", x, y, *ThreatModel.channel_range(x))
    cfg = BenchmarkConfig(eps=[16], attacks=["apgd-ce", "apgd-jsd", "pgd", "segpgd", "square", "fab-t"], iters=[4],
                          queries=[10], eps_channels=[1, 0])
    doc = Benchmark(net, 3, cfg, tmp_path, progress=False, keep=None).run([case])
    done = [r for r in doc.records if not r.skipped]
    assert {r.attack for r in done} == {"apgd-ce", "apgd-jsd", "pgd", "segpgd", "square"}
    fab = next(r for r in doc.records if r.attack == "fab-t")
    assert "one radius on every channel" in fab.skipped
    assert all(r.channel_eps == [16.0, 0.0] and r.in_ball for r in done)
    assert all(r.dice < doc.clean["c0"].dice for r in done if r.attack != "square")  # the attacks did move
    # the attacks' own outputs: channel 1 exactly as it was, channel 0 at the radius
    threat = ThreatModel(torch.tensor([16.0, 0.0]).view(1, 2, 1, 1, 1))
    span0 = float(case.hi[0, 0] - case.lo[0, 0])
    for attack in (APGD(net, threat, iters=4), APGD(net, threat, iters=5, loss="jsd", prr=True),
                   PGD(net, threat, iters=4), Square(net, threat, queries=30)):
        x_adv = attack(x, y, case.lo, case.hi)
        assert torch.equal(x_adv[:, 1], x[:, 1]), attack.name
        moved = float((x_adv[:, 0] - x[:, 0]).abs().max()) / span0 * 255
        assert 0 < moved <= 16 * (1 + 1e-5), attack.name


def test_sd_unit_is_the_labelled_voxels_standard_deviation(tmp_path):
    torch.manual_seed(2)
    x = torch.randn(1, 2, 10, 10, 10)
    y = torch.zeros(1, 10, 10, 10, dtype=torch.long)
    y[:, 2:7, 2:7, 2:7] = 1
    x[:, 1] *= 4
    case = BenchCase("c0", x, y, *ThreatModel.channel_range(x))
    sd = torch.stack([x[0, c][y[0] > 0].double().std() for c in range(2)])
    assert torch.allclose(input_units(case, "sd"), sd)
    radius = range_eps(case, 0.5, "sd")  # half a standard deviation: each channel its own radius
    span = (case.hi - case.lo).flatten().double()
    assert torch.allclose(radius.flatten().double(), 0.5 * sd / span * 255, rtol=1e-6)
    net = _net(channels=2, classes=2)
    with torch.no_grad():
        case.y = net(x).argmax(1)
    doc = Benchmark(net, 2, BenchmarkConfig(eps=[0.5], attacks=["apgd-ce"], iters=[3], eps_unit="sd"), tmp_path,
                    progress=False).run([case])
    assert doc.records[0].in_ball and doc.threat["unit"] == "sd"


def test_units_refuse_what_they_cannot_measure(prepared, tmp_path):
    x = torch.randn(1, 2, 8, 8, 8)
    case = BenchCase("mr", x, torch.ones(1, 8, 8, 8, dtype=torch.long), *ThreatModel.channel_range(x))
    with pytest.raises(BenchError, match=r"--eps-unit hu: case mr: channel\(s\) \[0, 1\] are not known"):
        range_eps(case, 10, "hu")
    with pytest.raises(BenchError, match=r"--eps-channels \[1.0\]: 1 value\(s\) for 2 input channel"):
        range_eps(case, 8, "range", [1.0])
    with pytest.raises(BenchError, match="eps_unit"):
        BenchmarkConfig(eps=[8], eps_unit="mm")
    with pytest.raises(BenchError, match=r"eps \(--eps\) \[300.0\]"):
        BenchmarkConfig(eps=[300])  # on the /255 scale: beyond the whole box
    BenchmarkConfig(eps=[300], eps_unit="hu")  # 300 HU is a radius like any other
    with pytest.raises(BenchError, match="at least one of them > 0"):
        BenchmarkConfig(eps=[8], eps_channels=[0, 0])
    net = _net(channels=2)
    cfg = BenchmarkConfig(eps=[8], attacks=["pgd"], iters=[1], norm="l2", eps_channels=[1, 0])
    with pytest.raises(BenchError, match="only linf takes them"):
        Benchmark(net, 3, cfg, tmp_path, progress=False).run([case])
