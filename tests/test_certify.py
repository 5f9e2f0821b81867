"""Randomized smoothing's certificates (`rog certify`): against the closed form of a per-voxel
threshold model, Holm's correction against its definition, the certified Dice bound worked by
hand and bracketed by attacks on a trained segmenter, determinism and resume."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from rog.bench import BenchCase, CertifyConfig, CertifySweep
from rog.certify.smoothing import bonferroni, certified_dice, certify, holm, vote_counts


class Threshold(torch.nn.Module):
    """Class 1 where a voxel's value exceeds 0.5, else 0, voxel by voxel: under noise of sd s
    a voxel at v has class 1 with probability Phi((v - 0.5) / s), and only its own value moves
    its label, so its true certified L2 radius is |v - 0.5|."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 50 * (x - 0.5)], 1)


def test_certificates_follow_the_closed_form_of_a_threshold_model():
    sigma, n, alpha = 0.25, 400, 0.01
    values = torch.linspace(0.02, 0.98, 64).view(1, 1, 4, 4, 4)
    d = (values - 0.5).abs()[0, 0].numpy()  # each voxel's true radius
    lo, hi = torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    counts0 = vote_counts(Threshold(), values, lo, hi, 2, sigma, 20, 7, g)
    counts = vote_counts(Threshold(), values, lo, hi, 2, sigma, n, 7, g)
    assert bool((counts.sum(0) == n).all())
    # the estimated probability of class 1 is Phi((v - 0.5) / sigma), within 4 binomial sd
    p = stats.norm.cdf((values[0, 0].numpy() - 0.5) / sigma)
    assert np.all(np.abs(counts[1].numpy() / n - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9)
    radii = [0.0, 0.05, 0.1, 0.2]
    label, certified = certify(counts0, counts, np.ones(d.shape, bool), sigma, alpha, radii)
    truth = (values[0, 0] > 0.5).long().numpy()
    assert np.array_equal(label[d >= 0.2], truth[d >= 0.2])  # 20 votes choose the class away from the coin flip
    for r in radii:
        # sound: no voxel certified beyond its true radius, or with the minority class
        assert np.all(d[certified[r]] > r) and np.array_equal(label[certified[r]], truth[certified[r]]), r
        assert np.all(certified[r][d >= r + 0.15]), r  # and voxels well inside it are certified
    assert not certified[0.0][d < 0.02].any()  # at the threshold the vote is a coin: abstained
    # deterministic under the generator's seed
    again = vote_counts(Threshold(), values, lo, hi, 2, sigma, n, 5, torch.Generator().manual_seed(0))
    assert torch.equal(vote_counts(Threshold(), values, lo, hi, 2, sigma, 20, 7, torch.Generator().manual_seed(0)),
                       counts0) and again.shape == counts.shape


def test_holm_rejects_as_its_definition():
    # reject H_(i) iff p_(j) <= alpha / (m - j + 1) for every j <= i (1-based, p sorted)
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.choice([1e-4, 0.003, 0.01, 0.02, 0.2, 0.6], size=rng.integers(1, 8))
        order = np.argsort(p, kind="stable")
        expected = np.zeros(len(p), bool)
        for i in range(len(p)):
            if all(p[order[j]] <= 0.05 / (len(p) - j) for j in range(i + 1)):
                expected[order[i]] = True
        assert np.array_equal(holm(p, 0.05), expected), p
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert holm(p, 0.05).tolist() == [True, False, False, True]  # 0.005 <= 0.0125, 0.01 <= 0.0167, 0.03 > 0.025
    assert bonferroni(p, 0.05).tolist() == [True, False, False, True]
    p = np.array([0.01, 0.03])  # Holm: 0.01 <= 0.025, then 0.03 <= 0.05; Bonferroni: 0.03 > 0.025
    assert holm(p, 0.05).tolist() == [True, True] and bonferroni(p, 0.05).tolist() == [True, False]


def test_the_certified_dice_counts_abstentions_the_worst_way():
    ref = np.array([1, 1, 1, 1, 0, 0, 0, 2, 2, 3])  # 3: not scored (an ignore label with K = 3)
    label = np.array([1, 1, 0, 1, 1, 0, 0, 2, 1, 0])
    kept = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 0], bool)
    # class 1: TP 2 (voxels 0, 1); FN 2 (2 labelled 0, 3 abstained); FP 2 certified (4, 8)
    # + 1 abstained scored voxel not of class 1 (6) -> 2 * 2 / (4 + 3 + 2)
    # class 2: TP 1 (7); FN 1 (8 labelled 1); FP the abstained scored voxels 3 and 6 -> 2 / 5
    got = certified_dice(label, kept, ref, 3)
    assert got.tolist() == pytest.approx([4 / 9, 2 / 5])
    # every voxel certified: the Dice of the labels themselves
    from rog.evaluate.metrics import Regions, dice_per_class
    every = np.ones(10, bool)
    assert np.allclose(certified_dice(label, every, ref, 3), dice_per_class(label, ref, 3), equal_nan=True)
    # regions: the sets of labels, as Dice per region
    k = Regions(3, [(1, 2), (2,)])
    assert np.allclose(certified_dice(label, every, ref, k), dice_per_class(label, ref, k), equal_nan=True)


def _cases(model, n=2):
    from tests.trained import sphere_volumes
    x, y = sphere_volumes(n, 16, 3, seed=11)
    return [BenchCase(f"s{i}", x[i:i + 1], y[i:i + 1], torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1))
            for i in range(n)]


def test_the_certified_bound_lies_below_attacks_at_the_same_radius(segmenter3, tmp_path):
    # on a trained segmenter: the certified Dice at r is below the smoothed labels' Dice, and
    # below the Dice an L2 attack of norm r reaches on the base model and on the smoothed labels
    from rog.attacks import APGD, ThreatModel
    from rog.evaluate.metrics import dice_per_class, mean_dice
    cfg = CertifyConfig(sigmas=[0.12], samples0=8, samples=60, radii=[0.0, 0.06, 0.12], alpha=0.01, batch=4)
    cases = _cases(segmenter3)
    doc = CertifySweep(segmenter3, 3, cfg, tmp_path, None, None, progress=False).run(cases)
    for rec, case in zip(doc.records, cases):
        assert rec.certified_dice == sorted(rec.certified_dice, reverse=True)  # a larger radius, a lower bound
        assert rec.certified_dice[0] <= rec.smoothed_dice + 1e-12 and 0 < rec.certified_share[0] <= 1
        for r, bound, eps in zip(rec.radii[1:], rec.certified_dice[1:], rec.l2_eps[1:]):
            attack = APGD(segmenter3, ThreatModel.exactly(eps, "l2"), iters=10, num_classes=3)
            x_adv = attack(case.x, case.y, case.lo, case.hi)
            assert float((x_adv - case.x).norm()) <= r * (1 + 1e-4)  # the attack's ball is the radius's
            assert bound <= attack.info["dice"][0], (r, bound, attack.info["dice"])
            votes = vote_counts(segmenter3, x_adv, case.lo, case.hi, 3, 0.12, 60, 4, torch.Generator().manual_seed(5))
            smoothed_adv = mean_dice(dice_per_class(votes.argmax(0).numpy(), case.y[0].numpy(), 3))
            print(f"{case.name} r {r}: certified {bound:.3f}, smoothed under attack {smoothed_adv:.3f}, "
                  f"base under attack {attack.info['dice'][0]:.3f}")
            assert bound <= smoothed_adv
    assert doc.summary.sigmas["0.12"].cases == 2 and [c.status for c in doc.checks] == ["pass"]


def test_the_report_brackets_certificates_with_the_l2_attacks_of_the_same_balls(segmenter3, tmp_path):
    # the report pairs each certify record's radius with the attack records at that case's own
    # l2_eps; an L2 attack that brackets a certificate leaves the attack sections to the L-inf one
    from rog.bench import Benchmark, BenchmarkConfig
    from rog.report.build import build_report
    from rog.results import Meta
    cases, meta = _cases(segmenter3), Meta(label="net")
    cfg = CertifyConfig(sigmas=[0.12], samples0=4, samples=20, radii=[0.0, 0.06, 0.12, 0.5], alpha=0.01, batch=4)
    cert = CertifySweep(segmenter3, 3, cfg, tmp_path / "cert", None, None, progress=False, meta=meta).run(cases)
    eps = [cert.records[0].l2_eps[1], cert.records[0].l2_eps[2]]  # r = 0.5 is left unattacked
    l2 = Benchmark(segmenter3, 3, BenchmarkConfig(eps=eps, attacks=["apgd-ce", "pgd"], iters=[3], scope="volume",
                                                  norm="l2"), tmp_path / "l2", progress=False, meta=meta).run(cases)
    Benchmark(segmenter3, 3, BenchmarkConfig(eps=[8], attacks=["pgd"], iters=[2]), tmp_path / "linf",
              progress=False, meta=meta).run(cases)
    summary = build_report([tmp_path / "cert", tmp_path / "l2", tmp_path / "linf"], tmp_path / "rep", panels=False)
    assert list(summary.models) == ["net"] and list(summary.models["net"].eps) == ["8.0"]  # the L-inf run only
    (b,) = summary.certified["net"]
    worst = {(r.case, r.eps): min(x.dice for x in l2.records if (x.case, x.eps) == (r.case, r.eps)) for r in l2.records}
    assert b.points[0].attacked == pytest.approx(np.mean([c.dice for c in cert.clean.values()]))
    for i in (1, 2):
        p = b.points[i]
        assert p.attacked == pytest.approx(np.mean([worst[c.name, eps[i - 1]] for c in cases]))
        assert p.certified <= p.attacked and p.attacks == ["apgd-ce@3", "pgd@3"]
        assert p.rms == pytest.approx([eps[i - 1] / 255])  # the cases' range is 1
    assert b.points[3].attacked is None and b.points[3].certified == pytest.approx(
        np.mean([r.certified_dice[3] for r in cert.records]))
    assert b.linf_l2 == pytest.approx(8 / 255 * 16 ** 1.5)  # 8/255 in every one of 16^3 voxels
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "certified.png" in summary.figures and (tmp_path / "rep" / "certified.png").stat().st_size > 0
    assert "Certified robustness" in html and "not every case was attacked at that radius" in html
    doc = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert doc["certified"]["net"][0]["points"][1]["attacked"] == pytest.approx(b.points[1].attacked)


def test_certify_is_deterministic_and_resumes_exactly(segmenter3, tmp_path):
    cfg = CertifyConfig(sigmas=[0.1, 0.2], samples0=4, samples=12, radii=[0.0, 0.05])
    cases = _cases(segmenter3)
    full = CertifySweep(segmenter3, 3, cfg, tmp_path / "a", None, None, progress=False).run(cases)
    again = CertifySweep(segmenter3, 3, cfg, tmp_path / "b", None, None, progress=False).run(cases)
    same = lambda rs: [replace(r, seconds=0) for r in rs]  # noqa: E731
    assert same(full.records) == same(again.records) and len(full.records) == 4
    # a run killed after its first case: the resumed one makes only the second case's records
    doc = json.loads((tmp_path / "b" / "results.json").read_text())
    doc.update(records=doc["records"][:2], complete=False, summary=None, checks=[])
    (tmp_path / "b" / "results.json").write_text(json.dumps(doc))
    resumed = CertifySweep(segmenter3, 3, cfg, tmp_path / "b", None, None, progress=False).run(cases)
    assert same(resumed.records) == same(full.records)
    assert resumed.records[:2] == again.records[:2]  # kept, not recomputed (their seconds too)
    with pytest.raises(Exception, match="different configuration"):
        CertifySweep(segmenter3, 3, replace(cfg, samples=13), tmp_path / "b", None, None, progress=False).run(cases)


@pytest.mark.parametrize("bad, what", [(dict(sigmas=[0]), "sigmas"), (dict(alpha=1.5), "alpha"),
                                       (dict(radii=[-1]), "radii"), (dict(correction="fdr"), "correction"),
                                       (dict(samples=0), "samples")])
def test_a_nonsense_certify_option_is_refused_by_name(bad, what):
    from rog.bench.records import BenchError
    with pytest.raises(BenchError, match=what):
        CertifyConfig(**bad)


def test_certify_command(prepared, tmp_path, capsys):
    from rog.cli import main
    wd, plan = prepared
    plan.save(tmp_path / "plan.json")
    out = tmp_path / "cert"
    code = main(["certify", "--model", "rog", "--plan", str(tmp_path / "plan.json"), "--data", str(wd.preprocessed),
                 "--sigmas", "0.1", "--samples", "6", "--samples0", "2", "--radii", "0", "0.02", "--max-cases", "1",
                 "-o", str(out), "--device", "cpu"])
    said = capsys.readouterr().out
    assert code == 0 and "of the smoothed model, not the base model" in said and "sigma 0.1: smoothed Dice" in said
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "certify" and doc["records"][0]["samples"] == 6
    assert (out / "results.csv").read_text().startswith("case,sigma,samples")
