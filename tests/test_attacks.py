import numpy as np
import pytest
import torch
from torch import nn

from rog.attacks import APGD, FAB, PGD, CosPGD, RightPGD, SegPGD, Square, ThreatModel
from rog.attacks.apgd import apgd_checkpoints
from rog.attacks.fab import project_linf_hyperplane

ATTACKS = [
    (PGD, dict(iters=3)), (SegPGD, dict(iters=3)), (CosPGD, dict(iters=3)), (RightPGD, dict(iters=3)),
    (APGD, dict(iters=4)), (APGD, dict(iters=4, loss="dlr")), (APGD, dict(iters=3, loss="dlr-targeted")),
    (FAB, dict(iters=3)), (Square, dict(queries=12)),
]


def _model(in_ch, classes, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(in_ch, 6, 3, padding=1), nn.Tanh(), nn.Conv3d(6, classes, 3, padding=1))


@pytest.mark.parametrize("attack,kw", ATTACKS, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("seed", [0, 1])
def test_ball_box_finite_and_reproducible(attack, kw, seed):
    g = torch.Generator().manual_seed(seed)
    channels, classes = [(1, 4), (3, 5)][seed]
    model = _model(channels, classes, seed)
    # channels on very different scales (CT-like HU and a z-scored one): the ball is per channel
    x = torch.randn(2, channels, 8, 10, 6, generator=g) * torch.tensor([300.0, 1.0, 5.0][:channels]).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = ThreatModel(8)
    lo, hi = ThreatModel.channel_range(x)
    a = attack(model, threat, seed=seed, **kw)
    x_adv = a(x, y)
    eps_abs = 8 / 255 * (hi - lo)
    assert torch.isfinite(x_adv).all()
    assert ((x_adv - x).abs() <= eps_abs * (1 + 1e-6)).all()
    slack = 1e-6 * (hi - lo)  # the raw output: float rounding of the box edge, no clipping
    assert (x_adv >= lo - slack).all() and (x_adv <= hi + slack).all()
    assert torch.equal(x_adv, attack(model, threat, seed=seed, **kw)(x, y))
    assert all(d <= c + 1e-9 for d, c in zip(a.info["dice"], a.info["clean_dice"]))  # lowest Dice kept
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # no weight grads


def test_parameters_are_frozen_during_and_restored_after():
    model = _model(1, 3, 0).train()
    seen = []
    original = model.forward

    def spy(x):
        seen.append((model.training, any(p.requires_grad for p in model.parameters())))
        return original(x)

    model.forward = spy
    x = torch.randn(1, 1, 6, 6, 6)
    PGD(model, ThreatModel(4), iters=2)(x, torch.zeros(1, 6, 6, 6, dtype=torch.long))
    assert seen and all(s == (False, False) for s in seen)
    assert model.training and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("loss", ["dlr", "dlr-targeted"])
def test_dlr_losses_run_on_binary_and_three_class_tasks(classes, loss):
    model, x = _model(1, classes, 0), torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    a = APGD(model, ThreatModel(16), iters=5, loss=loss)
    assert a.skip_reason(classes) is None
    a(x, y)
    assert np.mean(a.info["dice"]) < 1.0  # not skipped, and it attacks


def test_binary_margin_ratio_is_scale_invariant_and_has_a_gradient():
    from rog.attacks import losses
    torch.manual_seed(0)
    z = torch.randn(2, 2, 6, 6, 6)
    y = z.argmax(1)  # every voxel correct: a ratio of means would be constant here
    base = losses.binary_margin_ratio(z, y)
    torch.testing.assert_close(losses.binary_margin_ratio(7.5 * z + 3.0, y), base)
    torch.testing.assert_close(losses.dlr(z, y), base)
    zg = z.clone().requires_grad_(True)
    losses.binary_margin_ratio(zg, y).sum().backward()
    assert zg.grad.abs().sum() > 0


def test_apgd_step_size_checkpoints_follow_autoattack():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    model = _model(1, 3, 0)
    a = APGD(model, ThreatModel(8), iters=100)
    a(torch.randn(1, 1, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long))
    assert a.info["checkpoints"] == apgd_checkpoints(100)


def _labelled(seed, shape):
    """A random model and inputs labelled by the model itself (clean Dice 1)."""
    model = _model(1, 3, seed)
    x = torch.randn(*shape)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def test_stronger_with_larger_eps_and_attacks_do_something():
    model, x, y = _labelled(2, (4, 1, 10, 10, 10))
    a2, a16 = APGD(model, ThreatModel(2), iters=10), APGD(model, ThreatModel(16), iters=10)
    a2(x, y)
    a16(x, y)
    assert np.mean(a16.info["dice"]) < np.mean(a2.info["dice"]) < 1.0
    sq = Square(model, ThreatModel(16), queries=40)
    sq(x, y)
    assert np.mean(sq.info["dice"]) < 1.0 and sq.info["queries"] == 40


def test_fab_reports_honestly(segmenter3):
    from tests.trained import sphere_volumes
    x, y = sphere_volumes(2, 16, 3, seed=99)
    ones = torch.ones(2, 1, 1, 1, 1)
    small, large = FAB(segmenter3, ThreatModel.of_range(0.5 / 255), iters=5), FAB(segmenter3, ThreatModel(200), iters=5)
    assert torch.equal(small(x, y, 0 * ones, ones), x)  # nothing found: the clean input comes back
    large(x, y, 0 * ones, ones)
    assert small.info["found"] == [False, False] and all("outside the ball" in r for r in small.info["reason"])
    assert all(large.info["found"]) and all(n <= 200 for n in large.info["min_norm"])
    assert large.info["reason"] == [None, None]
    assert small.info["min_norm"] == large.info["min_norm"]  # the search does not depend on eps


def test_square_spends_no_query_on_a_cube_that_changes_nothing():
    model, x, y = _labelled(5, (2, 1, 10, 10, 10))  # one channel: a cube has one sign to draw
    sq = Square(model, ThreatModel(16), queries=60, p_init=0.3)
    sq(x, y)
    assert sq.info["queries"] == 60 and sq.info["noop_queries"] == 0
    plain = Square(model, ThreatModel(16), queries=60, p_init=0.3, redraw_noops=False)
    plain(x, y)
    assert plain.info["noop_queries"] > 2  # without redrawing, such cubes are frequent


def test_linf_hyperplane_projection_is_minimal():
    u = torch.full((1, 5), 0.5)
    w = torch.tensor([[1.0, -2.0, 0.0, 0.5, 1.0]])
    c = torch.tensor([0.9])
    d = project_linf_hyperplane(u, w, c)
    assert (w * d).sum().item() == pytest.approx(0.9, abs=1e-4)
    assert d.abs().max().item() == pytest.approx(0.9 / w.abs().sum().item(), abs=1e-4)


def test_square_in_volume_scope_reruns_only_touched_windows_with_the_same_result():
    from rog.infer import SlidingWindow

    class Counting(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.windows = net, 0

        def forward(self, x):
            self.windows += x.shape[0]
            return self.net(x)

    net, x, y = _labelled(4, (2, 1, 24, 24, 20))
    runs = {}
    for name in ("cached", "full"):
        counting = Counting(net)
        sw = SlidingWindow(counting, (8, 8, 8), batch_size=8)
        sq = Square(sw, ThreatModel(16), queries=30, p_init=0.05, window_cache=name == "cached")
        runs[name] = (sq(x, y), sq.info["dice"], counting.windows)
    torch.testing.assert_close(runs["cached"][0], runs["full"][0], rtol=0, atol=0)
    assert runs["cached"][1] == pytest.approx(runs["full"][1], abs=1e-9)
    assert np.mean(runs["cached"][1]) < 1.0
    assert runs["cached"][2] < runs["full"][2] / 4


def test_autoattack_users_traps_are_closed(segmenter3):
    from rog.bench import Ensemble
    from tests.trained import sphere_volumes
    # 8/255 typed as a fraction would mean 0.03/255 here: refused, with both ways out named
    with pytest.raises(ValueError, match=r"ThreatModel\(8\).*ThreatModel\.of_range"):
        ThreatModel(8 / 255)
    with pytest.raises(ValueError, match="/255 scale"):
        Ensemble(segmenter3, eps=0.03)
    assert ThreatModel.of_range(8 / 255).eps == pytest.approx(8) and ThreatModel.of_range(0.5 / 255).eps == 0.5
    # MONAI's [B, 1, ...] labels give the same attack as [B, ...]; other shapes are refused by name
    x, y = sphere_volumes(2, 16, 3, seed=5)
    plain, monai = PGD(segmenter3, ThreatModel(8), iters=2), PGD(segmenter3, ThreatModel(8), iters=2)
    torch.testing.assert_close(plain(x, y), monai(x, y[:, None]), rtol=0, atol=0)
    assert plain.info["dice"] == monai.info["dice"] and max(plain.info["dice"]) < 1
    with pytest.raises(ValueError, match=r"labels y \[B, \.\.\.\] or \[B, 1, \.\.\.\]"):
        plain(x, y[:, :8])
    ens = Ensemble(segmenter3, eps=8, attacks=["pgd"], iters=2)
    torch.testing.assert_close(ens(x, y[:, None]), plain(x, y), rtol=0, atol=0)
