"""Every validity check of the attack benchmark can fail: a test per check makes it fail, and a
sound evaluation of a trained model passes them all."""
import numpy as np
import pytest
import torch
from torch import nn

from rog.attacks import ThreatModel
from rog.attacks.base import Attack
from rog.bench import Benchmark, BenchmarkConfig, BenchCase, checks
from rog.bench.records import measure
from rog.results import AttackRecord, AttackSummary, EpsSummary
from tests.trained import sphere_volumes


def _cases(n=2, classes=3):
    x, y = sphere_volumes(n, 16, classes, seed=99)
    return [BenchCase(f"c{i}", x[i:i + 1], y[i:i + 1], torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1))
            for i in range(n)]


class Escaping(Attack):
    """A broken attack: returns a point `factor` radii away from the clean input, or NaN."""

    name = "escaping"

    def __init__(self, model, threat, factor=3.0, nan=False):
        super().__init__(model, threat)
        self.factor, self.nan = factor, nan

    def perturb(self, u0, y, forward, tracker, logits0):
        tracker.best_u = u0 + self.factor * self.threat.radius
        if self.nan:
            tracker.best_u[..., 0, 0, 0] = float("nan")


@pytest.mark.parametrize("how", ["ball", "box", "nan"])
def test_ball_box_finite_check_sees_the_attack_raw_output(segmenter3, how):
    case = _cases(1)[0]
    threat = ThreatModel(8)
    x = case.x.clamp(0.2, 0.8) if how == "ball" else case.x  # "box": x reaches 1, +3 radii leaves [0, 1]
    attack = Escaping(segmenter3, threat, factor=3.0 if how != "nan" else 0.5, nan=how == "nan")
    x_adv = attack(x, case.y, case.lo, case.hi)
    with torch.no_grad():
        pred = segmenter3(torch.nan_to_num(x_adv)).argmax(1)
    head = dict(case="c0", attack="escaping", attack_id="escaping@1", eps=8.0, budget=1)
    record = measure(head, pred, case.y, x_adv, x, case.lo, case.hi, threat, 3, 0.3)
    assert not getattr(record, {"ball": "in_ball", "box": "in_box", "nan": "finite"}[how])
    assert checks.ball_box_finite([record]).status == "fail"


def test_gradient_check_fails_on_one_masked_instance(segmenter3):
    cases = _cases(2)

    class Quantised(nn.Module):  # rounds its input: zero gradient almost everywhere
        def forward(self, x):
            return segmenter3(torch.round(x * 4) / 4)

    class Singular(nn.Module):  # sqrt at 0: infinite gradient
        def forward(self, x):
            return segmenter3(x) + torch.sqrt((x - x.detach()).abs()).sum((1,), keepdim=True)

    ok = checks.input_gradients([(c.name, segmenter3, c.x, c.y) for c in cases])
    assert ok.status == "pass"
    for masked in (Quantised(), Singular()):
        items = [(cases[0].name, segmenter3, cases[0].x, cases[0].y), (cases[1].name, masked, cases[1].x, cases[1].y)]
        result = checks.input_gradients(items)
        assert result.status == "fail" and "c1" in result.detail and "c0" not in result.detail


def test_gradient_check_fails_on_a_half_dead_gradient():
    # a backward pass in half precision, as nnU-Net-style half sums had: the mean loss's
    # per-voxel gradients below 6e-8 flush to zero, the larger ones survive; a 20x48x48
    # volume's mean puts most of them below (a clinical scan's puts nearly all)
    torch.manual_seed(0)
    net = nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([-20.0, 20.0]).view(2, 1, 1, 1, 1))
        net.bias.copy_(torch.tensor([10.0, -10.0]))

    class HalfBackward(nn.Module):
        def forward(self, x):
            return net(x).half().float()

    x = torch.rand(1, 1, 20, 48, 48)
    y = (x[:, 0] > 0.5).long()
    y[:, ::5] = 1 - y[:, ::5]
    sound = checks.input_gradients([("c0", net, x, y)])
    assert sound.status == "pass" and "none flushed" in sound.detail
    half = checks.input_gradients([("c0", net, x, y), ("c1", HalfBackward(), x, y)])
    assert half.status == "fail" and "c1: half-dead" in half.detail and "c0" not in half.detail
    # the gradient is neither zero nor non-finite: the old check passed it
    xg = x.clone().requires_grad_(True)
    g = torch.autograd.grad(nn.functional.cross_entropy(HalfBackward()(xg), y), xg)[0]
    assert bool(torch.isfinite(g).all()) and bool((g != 0).any()) and float((g == 0).float().mean()) > 0.3


def test_logits_check_fails_on_probabilities(segmenter3):
    x = _cases(1)[0].x
    assert checks.logits_not_probabilities(segmenter3, x).status == "pass"
    softmax = nn.Sequential(segmenter3, nn.Softmax(dim=1))
    assert checks.logits_not_probabilities(softmax, x).status == "fail"


def _run_checks(model, tmp_path, iters):
    cfg = BenchmarkConfig(eps=[8], attacks=["pgd"], iters=[iters])
    doc = Benchmark(model, 3, cfg, tmp_path, progress=False).run(_cases(2))
    return {c.name: c for c in doc.checks}


def test_large_eps_check_has_its_own_budget_and_fails_on_a_model_attacks_cannot_move(segmenter3, tmp_path):
    # one iteration in the sweep: the sanity check still breaks a sound trained model
    sound = _run_checks(segmenter3, tmp_path / "sound", iters=1)
    assert all(c.status in ("pass", "skipped") for c in sound.values()), sound
    assert "10 iterations" in sound["large-eps sanity"].detail

    class Deaf(nn.Module):  # its input is detached: no gradient reaches it, PGD cannot move it
        def __init__(self):
            super().__init__()
            self.net = segmenter3

        def forward(self, x):
            return self.net(x.detach())

    deaf = _run_checks(Deaf(), tmp_path / "deaf", iters=1)
    assert deaf["large-eps sanity"].status == "fail"
    assert deaf["input gradients"].status == "fail"

    class Background(nn.Module):  # a training that never left the background: Dice 0 with or without an attack
        def forward(self, x):
            return torch.stack([x[:, 0] * 0 + 1] + [x[:, 0] * 0] * 2, 1)

    failed = _run_checks(Background(), tmp_path / "failed", iters=1)
    assert failed["large-eps sanity"].status == "warn" and "did it train?" in failed["large-eps sanity"].detail
    assert checks.large_eps(0.0, 0.2, 128, 10, clean=0.6).status == "pass"
    assert checks.large_eps(0.3, 0.2, 128, 10, clean=0.6).status == "fail"


def test_monotone_and_black_box_checks_fail_when_their_rule_is_broken():
    eps = {k: EpsSummary(d, 1.0, [d], {}, 1) for k, d in (("4.0", 0.4), ("8.0", 0.6))}
    assert checks.monotone_in_eps(AttackSummary(0.4, 0.8, eps, None)).status == "fail"
    records = [AttackRecord("c0", "square", "square@100", 8.0, 100, dice=0.1),
               AttackRecord("c0", "apgd-ce", "apgd-ce@5", 8.0, 5, dice=0.5)]
    assert checks.blackbox_not_stronger(records).status == "fail"
    np.testing.assert_equal(checks.blackbox_not_stronger(records[::-1][:1]).status, "skipped")
