"""The attacks' losses, schedules and boundaries against their formulas on small cases worked
by hand: the parts a classifier presented as a segmenter cannot test (voxels right and wrong
in one instance, SegPGD's and CosPGD's weights, FAB-T's boundary among many voxels)."""
import math

import pytest
import torch
import torch.nn.functional as F

from rog.attacks import APGD, FAB, RightPGD, ThreatModel, losses
from rog.attacks.fab import distance_to_success, flips_needed
from rog.evaluate.metrics import Regions, dice_batch


def _voxels(rows):
    """Logits `[1, K, V, 1, 1]` from one row of K logits per voxel."""
    return torch.tensor(rows).T.reshape(1, len(rows[0]), len(rows), 1, 1)


def test_dlr_takes_the_best_other_class_and_scales_by_the_first_minus_the_third():
    z = _voxels([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.5, -2.0]])  # voxel 0 right, voxel 1 wrong (label 0)
    y = torch.tensor([0, 0]).reshape(1, 2, 1, 1)
    right = -(3.0 - 1.0) / (3.0 - 0.0)  # best other: the runner-up; scale z_pi1 - z_pi3
    wrong = -(0.0 - 2.0) / (2.0 - 0.0)  # best other: the top class itself
    torch.testing.assert_close(losses.dlr(z, y), torch.tensor([(right + wrong) / 2]))


def test_segpgd_and_cospgd_weigh_the_voxels_as_their_papers():
    z = _voxels([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])  # voxels 0 and 2 right, 1 wrong (all labelled 0)
    y = torch.zeros(1, 3, 1, 1, dtype=torch.long)
    ce = F.cross_entropy(z, y, reduction="none").flatten()
    lam = 3 / (2 * 10)  # step 3 of 10: lambda = t / (2 T)
    expected = ((1 - lam) * (ce[0] + ce[2]) + lam * ce[1]) / 3
    torch.testing.assert_close(losses.segpgd(z, y, 3, 10), expected.view(1))
    p = z.softmax(1)[0, :, :, 0, 0]  # [K, V]
    cos = p[0] / p.norm(dim=0)  # the softmax's cosine to the one-hot label
    torch.testing.assert_close(losses.cospgd(z, y), (cos * ce).mean().view(1))
    torch.testing.assert_close(losses.ce_right(z, y), ((ce[0] + ce[2]) / 3).view(1))


def test_pgd_right_decays_its_step_on_a_cosine_from_eps():
    atk = RightPGD(torch.nn.Identity(), ThreatModel(8), iters=4)
    r = 8 / 255
    assert [atk.step_at(t) for t in range(4)] == pytest.approx([r * 0.5 * (1 + math.cos(math.pi * t / 4))
                                                                for t in range(4)])
    assert atk.step_at(0) == pytest.approx(r) and atk.step_at(3) < 0.15 * r


def test_fab_boundary_is_the_margin_of_the_voxel_whose_flip_crosses_tau():
    # six foreground voxels with margins 0.5 .. 5 (target: background), two background ones:
    # with j of them flipped the class's Dice is 2 (6 - j) / (12 - j), below tau 0.5 from j = 5,
    # so the boundary is the 5th smallest margin, 4
    margins = [3.0, 0.5, 5.0, 1.0, 4.0, 2.0]
    z = _voxels([[0.0, m] for m in margins] + [[2.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([1] * 6 + [0, 0]).reshape(1, 8, 1, 1)
    target = torch.zeros_like(y)
    tau = torch.tensor([0.5])
    assert float(distance_to_success(z, y, target, 2, tau, band=0.0)) == pytest.approx(4.0)
    # the band: +-0.2 x the 5 voxels still to flip, one rank each side: margins 3, 4, 5
    assert float(distance_to_success(z, y, target, 2, tau, band=0.2)) == pytest.approx(4.0)
    z[0, 1, 1] = -1.0  # the weakest voxel flipped: 4 more to flip, the boundary is still the margin 4
    assert float(distance_to_success(z, y, target, 2, tau, band=0.0)) == pytest.approx(4.0)


def test_losses_on_regions_are_each_regions_two_class_loss():
    # labels 0..3, regions (1, 2, 3) and (3,): region m = max over its labels - max over the
    # rest, m > 0 where the argmax lies in it; CE on regions = the mean over regions of the
    # binary CE of m against membership; an ignored voxel (label 4) adds nothing
    rows = [[0.0, 1.0, 3.0, 2.0], [2.0, 0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 5.0], [9.0, 0.0, 0.0, 0.0]]
    z = _voxels(rows)
    y = torch.tensor([3, 0, 1, 4]).reshape(1, 4, 1, 1)
    m = {(1, 2, 3): [3.0 - 0.0, 1.0 - 2.0, 5.0 - 0.0], (3,): [2.0 - 3.0, 1.0 - 2.0, 5.0 - 0.0]}
    inside = {(1, 2, 3): [1.0, 0.0, 1.0], (3,): [1.0, 0.0, 0.0]}
    bce = [F.binary_cross_entropy_with_logits(torch.tensor(m[r]), torch.tensor(inside[r]), reduction="sum") / 4
           for r in m]
    torch.testing.assert_close(losses.on_regions(losses.ce, list(m))(z, y), (sum(bce) / 2).view(1))
    # the attacks take their untargeted losses on a Regions' regions, on labels otherwise
    atk = APGD(torch.nn.Identity(), ThreatModel(8), num_classes=Regions(4, list(m)))
    torch.testing.assert_close(atk.scored_loss(losses.ce)(z, y), (sum(bce) / 2).view(1))
    assert APGD(torch.nn.Identity(), ThreatModel(8), num_classes=4).scored_loss(losses.ce) is losses.ce


def test_fab_counts_the_flips_that_take_region_dice_below_tau():
    # the count of `flips_needed` is the first j whose flipped prediction's region Dice, as
    # `dice_batch` computes it, is below tau, brute force over j on random maps
    k = Regions(4, [(1, 2, 3), (2, 3), (3,)])
    g = torch.Generator().manual_seed(1)
    y, target = torch.randint(0, 4, (3, 40), generator=g), torch.randint(0, 4, (3, 40), generator=g)
    h = torch.rand(3, 40, generator=g)
    h[:, ::5] = float("inf")  # no candidates
    tau = torch.tensor([0.9, 0.6, 0.3])
    order, count = flips_needed(h, y, target, k, tau)
    for b in range(3):
        candidates = [int(i) for i in order[b] if torch.isfinite(h[b, i])]
        expected = 40
        for j in range(len(candidates) + 1):
            pred = y[b].clone()
            pred[candidates[:j]] = target[b, candidates[:j]]
            if float(dice_batch(pred[None], y[b][None], k)) < float(tau[b]):
                expected = j
                break
        assert int(count[b]) == expected, b


def test_fab_steps_as_its_formula_on_a_linear_model():
    # one voxel, a linear two-class model: FAB's hyperplane is exact. Step 1 lands eta past it
    # (adversarial) and beta pulls it back; step 2 is biased towards the clean input by
    # alpha = |d1| / (|d1| + |d2|) <= alpha_max, the two projections from the point and from u0
    model = torch.nn.Conv3d(4, 2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -0.2, 0.5, 0.1], [-0.1, 0.2, -0.3, 0.4]]).view(2, 4, 1, 1, 1))
        model.bias.copy_(torch.tensor([0.2, 0.0]))
        u0 = torch.full((1, 4, 1, 1, 1), 0.5)
        z = model(u0).flatten()
        w = (model.weight[0] - model.weight[1]).flatten()
    y = torch.zeros(1, 1, 1, 1, dtype=torch.long)  # label 0, predicted: margin z0 - z1 > 0
    g0 = float(z[0] - z[1])
    assert g0 > 0
    d1 = -g0 * torch.sign(w) / w.abs().sum()  # the smallest L-inf step onto w.d = -g0
    eta, beta, alpha_max = 1.05, 0.9, 0.1
    u1 = beta * eta * d1  # adversarial after step 1, pulled back (as offsets from u0)
    g1 = g0 + float(w @ u1)
    step1, step2 = -g1 * torch.sign(w) / w.abs().sum(), d1  # onto the plane from u1 and from u0
    alpha = min(float(step1.abs().max() / (step1.abs().max() + step2.abs().max())), alpha_max)
    u2 = (u1 + eta * step1) * (1 - alpha) + eta * step2 * alpha
    assert g0 + float(w @ u2) < 0  # adversarial: its norm is the smallest seen
    fab = FAB(model, ThreatModel(100), iters=2, target_ranks=1, bisections=0)
    fab(u0, y, torch.zeros_like(u0), torch.ones_like(u0))
    assert fab.info["min_norm"][0] == pytest.approx(255 * float(u2.abs().max()), rel=1e-5)
    assert fab.info["min_norm"][0] < 255 * eta * float(d1.abs().max())


def test_sea_losses_follow_their_formulas_voxel_by_voxel():
    from scipy.spatial.distance import jensenshannon
    rows = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [0.3, 0.2, 0.1], [-1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    z = _voxels(rows)
    y = torch.tensor([0, 0, 1, 1, 3]).reshape(1, 5, 1, 1)  # 3 = K: ignored, in no loss
    p = torch.tensor(rows).softmax(1).tolist()
    # JS between each voxel's softmax and its one-hot label (scipy: the square root, natural log)
    js = [jensenshannon(p[i], [float(c == k) for c in range(3)]) ** 2 for i, k in enumerate([0, 0, 1, 1])]
    torch.testing.assert_close(losses.jsd(z, y), torch.tensor([sum(js) / 5], dtype=torch.float32))
    # masked CE, balanced: right voxels 0 (label 0) and 3 (label 1); N 4 scored, C 2 classes, 2 voxels each
    ce = [-math.log(p[i][k]) for i, k in ((0, 0), (3, 1))]
    torch.testing.assert_close(losses.ce_right_balanced(z, y), torch.tensor([(4 / (2 * 2)) * sum(ce) / 5],
                                                                            dtype=torch.float32))
    y_unbal = torch.tensor([0, 0, 0, 1, 3]).reshape(1, 5, 1, 1)  # class 0: 3 voxels (2 now right too), class 1: 1
    w0, w1 = 4 / (2 * 3), 4 / (2 * 1)
    expected = (w0 * (ce[0] - math.log(p[2][0])) + w1 * ce[1]) / 5
    torch.testing.assert_close(losses.ce_right_balanced(z, y_unbal), torch.tensor([expected], dtype=torch.float32))
    # masked spherical: -z_y / ||z|| on the right voxels
    sph = [-rows[i][k] / math.sqrt(sum(v * v for v in rows[i])) for i, k in ((0, 0), (3, 1))]
    torch.testing.assert_close(losses.spherical_right(z, y), torch.tensor([sum(sph) / 5], dtype=torch.float32))


def test_prr_runs_its_stages_at_shrinking_radii_and_returns_only_points_in_the_true_ball(monkeypatch):
    torch.manual_seed(0)
    x = torch.rand(2, 1, 6, 6, 4)
    model = torch.nn.Conv3d(1, 3, 3, padding=1)
    y = model(x).argmax(1)
    stages = []
    real = APGD._single_run

    def watched(self, u0, y, forward, tracker, loss_fn, start, n):
        stages.append((round(float(self.threat.eps), 6), n, start is None))
        real(self, u0, y, forward, tracker, loss_fn, start, n)
        if stages[-1][0] > 8:  # a point of a wider stage, outside the true ball, offered to the tracker
            u = (u0 + 12 / 255).clamp(0, 1)
            tracker.update(u, torch.zeros_like(forward(u)))

    monkeypatch.setattr(APGD, "_single_run", watched)
    attack = APGD(model, ThreatModel(8), iters=10, loss="jsd", prr=True, num_classes=3)
    x_adv = attack(x, y)
    assert stages == [(16.0, 3, True), (12.0, 3, False), (8.0, 4, False)] and attack.threat.eps == 8
    assert float((x_adv - x).abs().max()) <= 8 / 255 * float(x.max() - x.min()) + 1e-6  # the wider points never won
    assert attack.name == "apgd-jsd" and attack.config()["prr"] is True
