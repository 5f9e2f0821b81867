"""Worst-case scanner artefacts: the differentiable models on `rog.corruptions`' scale, the
search on a trained model, the sweep (records, resume, checks), the command and training."""
import dataclasses

import numpy as np
import pytest
import torch

from rog.artefacts.models import ARTEFACTS, BIAS_PEAK, bias_basis, make_artefact
from rog.artefacts.search import apply, worst_artefact
from rog.bench.artefact import ArtefactConfig, ArtefactSweep
from rog.bench.cases import BenchCase
from rog.cli import main
from rog.evaluate.metrics import dice_batch
from tests.conftest import interrupted_then_resumed
from tests.trained import sphere_volumes

SPACING = (1.0, 1.5, 2.0)
SHAPE = (2, 9, 12, 10)  # [C, X, Y, Z]


def _u(seed=0):
    torch.manual_seed(seed)
    return torch.rand(1, *SHAPE)


def _tio_image(u):
    import torchio as tio
    return tio.ScalarImage(tensor=u[0, :1], affine=np.diag([*SPACING, 1.0]))


@pytest.mark.parametrize("name", ARTEFACTS)
def test_each_artefact_is_the_identity_at_severity_zero_and_changes_the_image_above(name):
    u, unit = _u(), torch.tensor([0.1, 0.2])
    g = torch.Generator().manual_seed(0)
    zero, five = make_artefact(name, 0, SPACING, unit), make_artefact(name, 5, SPACING, unit)
    t = five.draw(3, SHAPE, g)
    assert t.shape == (3, five.size(SHAPE)) and t.abs().max() <= 1
    batch = u.expand(3, *SHAPE)
    assert torch.equal(zero(batch, t), batch)  # exactly: the same code path, parameters scaled by 0
    out = five(batch, t)
    assert out.shape == batch.shape and torch.isfinite(out).all() and (out - batch).abs().max() > 1e-2


def test_bias_gamma_and_blur_are_torchios_transforms_at_the_same_parameters():
    # the severity scale is rog.corruptions': TorchIO's transforms with these physical parameters
    import torchio as tio
    u, unit = _u()[:, :1], torch.tensor([0.1])
    shape = (1, *SHAPE[1:])
    bias = make_artefact("bias", 3, SPACING, unit)
    t = torch.rand(1, 20) * 2 - 1
    ref = tio.BiasField(coefficients=(bias.level * t[0]).tolist(), order=3)(_tio_image(u)).data
    torch.testing.assert_close(bias(u, t), ref[None], atol=1e-5, rtol=1e-5)
    # the severity bounds the field itself: a corner of the coefficient box (|log field| 20 x the
    # level at the volume's corners, x403 at severity 3) is scaled to the peak the draws realise
    corner = torch.ones(1, 20)
    assert float(bias(u, corner).div(u).log().abs().max()) == pytest.approx(BIAS_PEAK * bias.level, rel=1e-4)
    assert bias.describe(corner[0], shape)["peak_log_field"] == [pytest.approx(BIAS_PEAK * bias.level, abs=1e-4)]
    draws = bias.draw(2000, shape, torch.Generator().manual_seed(0))
    peaks = torch.einsum("np,pxyz->nxyz", draws, bias_basis(SHAPE[1:])).abs().amax((1, 2, 3))
    assert 0.005 < float((peaks > BIAS_PEAK).float().mean()) < 0.02  # about 1 % of the draws are scaled
    gamma = make_artefact("gamma", 4, SPACING, unit)
    ref = tio.Gamma(gamma=float(np.exp(-0.7 * gamma.level)))(_tio_image(u)).data
    torch.testing.assert_close(gamma(u, torch.tensor([[-0.7]])), ref[None], atol=1e-6, rtol=1e-6)
    blur = make_artefact("blur", 4, SPACING, unit)
    for t in (torch.ones(1, 3), torch.tensor([[0.3, 0.5, 1.0]])):
        ref = tio.Blur(std=tuple((blur.level * t[0]).tolist()))(_tio_image(u)).data
        torch.testing.assert_close(blur(u, t), ref[None], atol=1e-5, rtol=1e-5)
    assert gamma.describe(torch.tensor([-0.7]), shape) == {"log_gamma": [round(-0.7 * gamma.level, 4)]}


def test_motion_is_torchios_about_the_same_centre_in_both_commands_and_the_noise_keeps_its_energy(monkeypatch):
    import torchio as tio

    import rog.corruptions as corruptions
    u, unit = _u()[:, :1], torch.tensor([0.1])
    u[0, 0, 0, 0, 0] = 0  # TorchIO fills with the image's minimum, rog with air (0): the same here
    motion = make_artefact("motion", 5, SPACING, unit)  # up to 8 degrees and mm
    moves = torch.tensor([[3.0, -5.0, 6.0, 2.0, -3.0, 4.0], [-2.0, 4.0, 1.0, -1.0, 2.5, 0.5]])  # degrees, mm

    def tio_motion(*_):
        return tio.Motion(degrees=moves[:, :3].double().numpy(), translation=moves[:, 3:].double().numpy(),
                          times=np.array([1 / 3, 2 / 3]), image_interpolation="linear")

    # TorchIO's motion rotates about the world origin: at the grid's centre it is rog's artefact
    ref = tio_motion()(tio.ScalarImage(tensor=u[0], affine=corruptions.centred_affine(SPACING, SHAPE[1:]))).data
    artefact = motion(u, moves.reshape(1, 12) / motion.level)
    torch.testing.assert_close(artefact, ref[None], atol=1e-5, rtol=0)
    # and rog corrupt's motion, at the same movements, is the same image: one centre in both commands
    monkeypatch.setitem(corruptions.CORRUPTIONS, "motion", dataclasses.replace(
        corruptions.CORRUPTIONS["motion"], make=tio_motion))
    corrupted = corruptions.corrupt(u[0], "motion", 5, SPACING, torch.zeros(1), torch.ones(1), torch.ones(1), 0)
    torch.testing.assert_close(corrupted, artefact[0], atol=1e-5, rtol=0)
    noise = make_artefact("noise", 5, SPACING, unit)  # 0.8 foreground sds
    t = torch.ones(1, noise.size((1, *SHAPE[1:])))  # the largest values everywhere: the RMS cap binds
    d = noise(u, t) - u
    assert float(d.pow(2).mean().sqrt()) == pytest.approx(0.8 * 0.1, rel=1e-5)


@pytest.mark.parametrize("name", ARTEFACTS)
def test_each_artefact_is_differentiable_in_its_parameters(name):
    unit = torch.tensor([0.1], dtype=torch.float64)
    shape = (1, 6, 7, 5)
    u = (torch.rand(1, *shape, dtype=torch.float64) * 0.8 + 0.1)
    art = make_artefact(name, 3, SPACING, unit)
    g = torch.Generator().manual_seed(1)
    # away from kinks: blur's |t| at 0, the noise's RMS cap at 1
    t = (art.draw(1, shape, g).double() * 0.5 + 0.3 * torch.sign(torch.randn(1, art.size(shape), generator=g,
                                                                                dtype=torch.float64))).clamp(-1, 1)
    t = t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: art(u, p), (t,), eps=1e-6, atol=1e-5, rtol=1e-3)


def _sphere_cases(n=2, seed=7):
    x, y = sphere_volumes(n, 16, 3, seed)
    return [BenchCase(f"s{i}", x[i:i + 1], y[i:i + 1], x[i:i + 1].amin((2, 3, 4), keepdim=True),
                      x[i:i + 1].amax((2, 3, 4), keepdim=True)) for i in range(n)]


def test_the_search_beats_the_best_of_many_random_draws_on_a_trained_model(segmenter3, monkeypatch):
    import rog.artefacts.search as search
    case = _sphere_cases(1)[0]
    unit = torch.tensor([0.1])
    largest = []  # every evaluated point's largest |t|: inside the bound at every step

    def watched(art, x, t, lo, hi):
        largest.append(float(t.detach().abs().max()))
        return apply(art, x, t, lo, hi)

    monkeypatch.setattr(search, "apply", watched)
    for name, severity in (("bias", 2), ("noise", 2), ("chain", 1)):  # where the draws leave the model standing
        art = make_artefact(name, severity, (1.0, 1.0, 1.0), unit)
        found = worst_artefact(segmenter3, art, case.x, case.y, case.lo, case.hi, 3, draws=10, iters=10,
                               restarts=2, seed=0)
        # 50 fresh draws of the same severity, seeded apart from the search's
        draws = art.draw(50, tuple(case.x.shape[1:]), torch.Generator().manual_seed(99))
        with torch.no_grad():
            fresh = min(float(dice_batch(segmenter3(apply(art, case.x, t[None], case.lo, case.hi)).argmax(1),
                                         case.y, 3)[0]) for t in draws)
        assert found.by == "search" and found.in_bound and found.t.abs().max() <= 1
        # (bias: within the field the draws realise, BIAS_PEAK x the level, the search's edge is 0.03)
        assert found.search_dice < fresh - 0.02 and found.search_dice < found.random_worst - 0.05, (name, found, fresh)
        # what it reports is what its parameters do
        with torch.no_grad():
            again = dice_batch(segmenter3(apply(art, case.x, found.t[None], case.lo, case.hi)).argmax(1), case.y, 3)
        assert float(again[0]) == pytest.approx(found.dice, abs=1e-6)
    assert len(largest) > 3 * (10 + 2 * 10) and max(largest) <= 1.0


def test_the_random_search_finds_what_a_step_function_hides_from_the_gradient():
    # each voxel flips to background once its parameter passes 0.4: the Dice is a staircase in t,
    # flat almost everywhere, so only a derivative-free search can walk it down
    from rog.artefacts.search import random_search
    y = torch.ones(1, 4, 4, 4, dtype=torch.long)

    def model(t):
        flipped = (t.repeat(8) > 0.4).view(1, 4, 4, 4).float()
        return torch.stack([flipped, 1 - flipped], 1) + 0 * t.sum()
    start = torch.zeros(8)
    t, dice, queries = random_search(model, start, y, 2, 40, torch.Generator().manual_seed(0))
    assert queries == 40 and t.abs().max() <= 1 and torch.equal(start, torch.zeros(8))  # the start is not moved
    assert dice == pytest.approx(float(dice_batch(model(t).argmax(1), y, 2)[0]))  # what it reports is what t does
    assert dice <= 0.4, (dice, t)  # from 1: most coordinates pushed past the step
    start.requires_grad_(True)
    model(start).max(1).values.sum().backward()
    assert float(start.grad.abs().sum()) == 0  # the gradient there says nothing


def test_without_a_gradient_the_search_goes_derivative_free_and_the_records_say_so(segmenter3, tmp_path):
    # the trained segmenter behind an argmax: the same labels, no gradient to the parameters
    class Hard(torch.nn.Module):
        def forward(self, x):
            return 10.0 * torch.nn.functional.one_hot(segmenter3(x).argmax(1), 3).movedim(-1, 1).float()
    case = _sphere_cases(1)[0]
    art = make_artefact("bias", 2, (1.0, 1.0, 1.0), torch.tensor([0.1]))
    hard = worst_artefact(Hard(), art, case.x, case.y, case.lo, case.hi, 3, draws=10, iters=10, restarts=2, seed=0)
    soft = worst_artefact(segmenter3, art, case.x, case.y, case.lo, case.hi, 3, draws=10, iters=10, restarts=2, seed=0)
    assert (hard.method, soft.method) == ("random", "apgd")
    assert hard.random_worst == pytest.approx(soft.random_worst)  # the same labels, the same draws
    assert hard.iterations == 2 * 3 * 11 and hard.in_bound  # APGD's cost in forward passes
    assert hard.by == "search" and hard.search_dice < hard.random_worst - 0.02, hard
    forced = worst_artefact(Hard(), art, case.x, case.y, case.lo, case.hi, 3, draws=10, iters=10, restarts=2,
                            seed=0, method="apgd")
    assert forced.search_dice == pytest.approx(forced.random_worst)  # APGD on a zero gradient keeps its start
    motion = make_artefact("motion", 2, (1.0, 1.0, 1.0), torch.tensor([0.1]))
    assert worst_artefact(segmenter3, motion, case.x, case.y, case.lo, case.hi, 3, draws=2, iters=1).method == "random"
    cfg = ArtefactConfig(artefacts=["bias"], severities=[2], draws=4, iters=2, restarts=1, search="random")
    doc = ArtefactSweep(segmenter3, 3, cfg, tmp_path, (16, 16, 16), (1.0, 1.0, 1.0), progress=False).run([case])
    assert doc.records[0].search == "random" and doc.records[0].iterations == 9
    assert "search" in (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    with pytest.raises(Exception, match="search"):
        ArtefactConfig(search="gradient")


def test_the_sweep_records_resumes_and_its_draw_check_catches_a_null_search(segmenter3, tmp_path, monkeypatch):
    cases = _sphere_cases(3)
    cfg = ArtefactConfig(artefacts=["bias", "gamma"], severities=[1, 4], draws=4, iters=4, restarts=1)
    doc = ArtefactSweep(segmenter3, 3, cfg, tmp_path / "a", (16, 16, 16), (1.0, 1.0, 1.0), progress=False).run(cases)
    assert doc.kind == "artefact" and len(doc.records) == 3 * 2 * 2
    for r in doc.records:
        assert r.dice == pytest.approx(min(r.search_dice, r.random_worst), abs=1e-6)
        assert r.dice <= doc.clean[r.case].dice + 1e-9 and r.in_bound and r.finite
    bias = doc.summary.artefacts["bias"]
    worst = np.mean([r.dice for r in doc.records if r.artefact == "bias" and r.severity == 4])
    assert bias.worst["4"] == pytest.approx(worst) and bias.worst["4"] <= bias.random["4"]
    statuses = {c.name: c.status for c in doc.checks}
    assert statuses["severity 0 is clean"] == "pass" and statuses["artefacts in bound and finite"] == "pass"
    # the search beats 10 fresh draws on every bias pair; gamma draws one value: tied, no evidence
    check = next(c for c in doc.checks if c.name == "search beats fresh draws")
    assert check.status == "pass" and "in 6 of 6 untied" in check.detail and "(6 tied" in check.detail
    assert (tmp_path / "a" / "results.csv").read_text().startswith("case,artefact,severity,dice,random_dice")
    # the report draws both curves, the worst artefacts' slices and their parameters
    from rog.report.build import build_report
    summary = build_report([tmp_path / "a"], tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Worst-case scanner artefacts" in html and "coefficients" in html
    assert {"artefacts.png", "artefact_panels.png"} <= set(summary.figures)
    assert all((tmp_path / "report" / f).is_file() for f in summary.figures)
    assert summary.artefacts["a"].artefacts["bias"].worst["4"] == pytest.approx(bias.worst["4"])
    again = ArtefactSweep(segmenter3, 3, cfg, tmp_path / "a", (16, 16, 16), (1.0, 1.0, 1.0), progress=False)
    again._do = None  # resumed: no job may run again
    assert [r.dice for r in again.run(cases).records] == [r.dice for r in doc.records]
    # a null search, one that keeps its start (the worst of its 10 draws), fails the check
    import rog.bench.artefact as sweep
    real = sweep.worst_artefact

    def null(model, art, x, y, lo, hi, k, draws, iters, *rest, **kw):
        found = real(model, art, x, y, lo, hi, k, draws, 0, *rest, **kw)
        found.search_dice = found.random_worst
        return found

    monkeypatch.setattr(sweep, "worst_artefact", null)
    weak = ArtefactConfig(artefacts=["bias", "noise"], severities=[2, 4], draws=10, iters=0)
    doc = ArtefactSweep(segmenter3, 3, weak, tmp_path / "b", (16, 16, 16), (1.0, 1.0, 1.0), progress=False).run(cases)
    assert {c.name: c.status for c in doc.checks}["search beats fresh draws"] == "fail"


def test_the_draw_check_is_a_sign_test_that_needs_enough_pairs():
    from rog.bench.checks import search_beats_draws
    pairs = lambda wins, losses, by=0.01: ([("w", 0.3, 0.3 + by)] * wins + [("l", 0.3 + by, 0.3)] * losses  # noqa: E731
                                          + [("t", 0.5, 0.5)] * 3)
    assert search_beats_draws(pairs(6, 0), 10).status == "pass"  # p = 1/64
    assert search_beats_draws(pairs(8, 1), 10).status == "pass"  # p = 10/512
    # a null search wins about half: no large miss, and still a failure
    null = search_beats_draws(pairs(6, 6), 10)
    assert null.status == "fail" and "6 of 12 untied" in null.detail and "p = 0.61" in null.detail
    assert search_beats_draws(pairs(7, 2), 10).status == "fail"  # p = 0.09
    assert search_beats_draws(pairs(4, 0), 10).status == "warn"  # at best p = 1/16: too few to say
    assert search_beats_draws(pairs(9, 1, by=0.05), 10).status == "fail"  # one draw beat it by 0.05


def test_rog_artefact_runs_on_a_run_and_refuses_nonsense(prepared, tmp_path, capsys):
    from rog.train.trainer import TrainConfig, Trainer
    wd, plan = prepared
    run = wd.root / "runs" / "art"
    Trainer(plan, wd.preprocessed, run, TrainConfig(epochs=1, iterations=1, batch_size=2, device="cpu"),
            progress=False).fit()
    code = main(["-q", "artefact", str(run), "--artefacts", "blur", "noise", "--severities", "2", "--draws", "2",
                 "--iterations", "1", "--restarts", "1", "-o", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code in (0, 1) and "blur" in out and "noise" in out and "check" in out
    from rog.rundir import ResultsDir
    doc = ResultsDir(tmp_path / "r").read()
    assert doc.kind == "artefact" and {r.artefact for r in doc.records} == {"blur", "noise"}
    assert main(["artefact", str(run), "--artefacts", "wobble", "-o", str(tmp_path / "x")]) == 2
    assert "unknown artefact 'wobble'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["artefact", str(run), "--severities", "7"])
    assert e.value.code == 2


def test_artefact_training_replays_each_batch_while_its_parameters_climb_the_loss():
    from rog.train.adversarial import ArtefactAT
    x, y = sphere_volumes(2, 12, 3, 0)
    seen = []

    def step(x_in, y_in):
        seen.append(x_in.detach().clone())
        loss = x_in.mean()  # a loss that rises as the image brightens
        loss.backward()
        return loss.detach()

    at = ArtefactAT(["gamma"], 5, replays=3, spacing=(1.0, 1.0, 1.0))
    at.step(x, y, torch.zeros(2, 1), torch.ones(2, 1), step, seed=3)
    assert len(seen) == 3 and at.last.startswith("gamma s")
    # gamma's draw is its bound, log gamma = +level (darker); each replay's signed step of 0.5
    # brightens it: t = 1, 0.5, 0, the last being the image itself
    level = int(at.last.split("s")[1]) / 10
    for t, seen_x in zip((1.0, 0.5, 0.0), seen):
        torch.testing.assert_close(seen_x, x.clamp(min=1e-12) ** np.exp(level * t), atol=1e-5, rtol=1e-5)


def test_an_artefact_trained_run_resumes_exactly_and_refuses_bad_options(prepared, tmp_path, monkeypatch):
    from rog.checkpoint import load_checkpoint
    from rog.errors import UsageError
    from rog.train.trainer import TrainConfig, Trainer
    wd, plan = prepared
    cfg = TrainConfig(epochs=2, iterations=2, batch_size=2, device="cpu", adv="artefact", replays=2,
                      artefacts=["bias", "motion"], artefact_severity=3, divide_epochs=False)
    Trainer(plan, wd.preprocessed, tmp_path / "a", cfg, progress=False).fit()
    b = interrupted_then_resumed(plan, wd.preprocessed, tmp_path / "b", cfg, monkeypatch, stop_at=2)
    a = load_checkpoint(tmp_path / "a" / "checkpoint_last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    clean = TrainConfig(epochs=2, iterations=2, batch_size=2, device="cpu", seed=0)
    Trainer(plan, wd.preprocessed, tmp_path / "c", clean, progress=False).fit()
    c = load_checkpoint(tmp_path / "c" / "checkpoint_last.pt")
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])  # the artefacts were trained on
    with pytest.raises(UsageError, match="--artefacts: unknown artefact 'ghost'"):
        TrainConfig(adv="artefact", artefacts=["ghost"])
    with pytest.raises(UsageError, match="--eps-warmup does not apply"):
        TrainConfig(adv="artefact", eps_warmup=0.3)
