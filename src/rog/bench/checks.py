"""Automated validity checks of an attack evaluation (Carlini et al. 2019; Pintor et al. 2022).

Each check returns a `rog.results.Check` (status "pass", "fail", "warn" or "skipped"); the
runner stores them with the results and the report shows failures first. Records and
summaries are the typed ones of `rog.results`.
"""
from __future__ import annotations

import math
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rog.attacks.base import frozen
from rog.attacks.registry import QUERY_BASED
from rog.results import ArtefactRecord, AttackRecord, AttackSummary, Check


def _result(name, ok, detail, warn=False) -> Check:
    return Check(name, "pass" if ok else ("warn" if warn else "fail"), detail)


def _skipped(name: str, detail: str) -> Check:
    return Check(name, "skipped", detail)


def ball_box_finite(records: list[AttackRecord]) -> Check:
    bad = [f"{r.case}/{r.attack_id}/eps {r.eps}" for r in records if not r.skipped and not r.valid()]
    return _result("ball, box and finite", not bad,
                   f"{len(bad)} adversarial input(s) outside the ball or box, or not finite: {bad[:5]}"
                   if bad else f"all {len(records)} adversarial inputs inside the eps-ball and box, finite")


def determinism(model, x: torch.Tensor) -> Check:
    with frozen(model), torch.no_grad():
        diff = (model(x) - model(x)).abs().max().item()
    return _result("deterministic model", diff == 0.0,
                   f"max |logits(x) - logits(x)| = {diff:.3g}" + ("" if diff == 0 else
                   ": the model is stochastic in eval mode; use EOT or fix the randomness"))


def input_gradients(items: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]], tol: float = 1e-3) -> Check:
    """Per instance: the gradient of the CE loss reaches the input, is finite, not zero
    everywhere, and not half-dead. `items`: (case name, model, x `[1, C, ...]`, y `[1, ...]`)
    per case; one masked instance fails the check (AMP underflow, a detached or quantising
    input path).

    Half-dead: the attacks' losses are means over the N voxels, so each voxel's gradient is
    about 1/N, and a backward pass in half precision flushes those below 6e-8 to zero (on a
    clinical scan, most of them) while the rest of the gradient looks sound. The reference is
    the gradient of the summed loss, N times larger: in full precision it is the same vector
    times N, zero at the same voxels, so an input voxel that is zero in the mean's gradient
    and not in the sum's was flushed (`flushed_share`); more than `tol` of them fails the
    instance."""
    bad = []
    for name, model, x, y in items:
        with frozen(model):
            xg = x.detach().clone().requires_grad_(True)
            logits = model(xg)
            losses = [F.cross_entropy(logits, y.long(), reduction=r) for r in ("mean", "sum")]
            grads = [None, None]
            if losses[0].requires_grad:
                grads = [torch.autograd.grad(loss, xg, retain_graph=i == 0, allow_unused=True)[0]
                         for i, loss in enumerate(losses)]
        grad, reference = grads
        if grad is None:
            bad.append(f"{name}: none")
        elif not bool(torch.isfinite(grad).all()):
            bad.append(f"{name}: not finite")
        elif not bool((grad != 0).any()):
            bad.append(f"{name}: zero")
        elif (share := flushed_share(grad, reference, y.numel())) > tol:
            bad.append(f"{name}: half-dead ({share:.1%} of the voxels zero where the summed loss's gradient is not: "
                       "a low-precision backward pass)")
    return _result("input gradients", not bad,
                   f"finite, non-zero input gradients on all {len(items)} case(s), none flushed to zero"
                   if not bad else
                   f"input gradient {', '.join(bad[:5])}: gradients are masked, white-box results are not trustworthy")


def flushed_share(grad: torch.Tensor, reference: torch.Tensor, n: int) -> float:
    """Share of the elements of `grad` (the mean loss's gradient) that are exactly zero where
    `reference` (the summed loss's, `n` times larger, same shape) is finite and `reference / n`
    is a normal fp32 number: there the mean's gradient would survive full precision. Voxels
    whose mean gradient is below fp32's smallest normal (1e-38, a fully confident voxel) are
    lost in full precision too, and carry nothing an attack could use."""
    live = torch.isfinite(reference) & (reference.abs() / n >= torch.finfo(torch.float32).tiny)
    return float(((grad == 0) & live).sum()) / max(int(live.sum()), 1)


def logits_not_probabilities(model: nn.Module, x: torch.Tensor, tol: float = 1e-4) -> Check:
    """AutoAttack's check: the model must return logits. Outputs in [0, 1] that sum to 1 over
    the classes at every voxel are probabilities, on which CE and DLR lose their gradients."""
    with frozen(model), torch.no_grad():
        out = model(x)
    probabilities = bool((out.min() >= 0) & (out.max() <= 1) & ((out.sum(1) - 1).abs().max() <= tol))
    return _result("logits, not probabilities", not probabilities,
                   "the model returns logits" if not probabilities else
                   "the model's outputs lie in [0, 1] and sum to 1 over the classes: they are probabilities; "
                   "attack the logits (remove the final softmax)")


def monotone_in_eps(summary: AttackSummary, tol: float = 0.01) -> Check:
    items = summary.eps_items()
    eps = [float(k) for k, _ in items]
    dice = [v.worst_case_dice for _, v in items]
    rises = [(a, b) for (a, da), (b, db) in zip(zip(eps, dice), zip(eps[1:], dice[1:])) if db > da + tol]
    if len(eps) < 2:
        return _skipped("monotone in eps", "fewer than two eps values")
    return _result("monotone in eps", not rises,
                   "worst-case Dice never rises with eps" if not rises else
                   f"worst-case Dice rises between eps {rises}: the attack is not converging")


def large_eps(dice_large: float, tau: float, eps: float, iters: int, clean: float) -> Check:
    """Whether PGD at a huge `eps` takes the mean Dice `dice_large` below `tau`. A warning, not
    a failure, where the mean `clean` Dice is not above `tau` already: a model that fails
    unattacked (a training that never left the background) gives an attack nothing to break,
    and its figures measure that, not robustness."""
    if clean <= tau:
        return _result("large-eps sanity", False, f"the clean mean Dice {clean:.3f} is not above the threshold "
                       f"{tau:.3f}: the model fails without an attack (did it train?); its robustness figures "
                       "measure that", warn=True)
    return _result("large-eps sanity", dice_large < tau,
                   f"at eps {eps:g}/255 PGD ({iters} iterations) drives mean Dice to {dice_large:.3f} "
                   f"(threshold {tau:.3f})"
                   + ("" if dice_large < tau else ": an unbounded attack should break the model; "
                      "suspect gradient masking or a broken attack"))


def blackbox_not_stronger(records: list[AttackRecord], tol: float = 0.02) -> Check:
    by_eps: dict = {}
    for r in records:
        if r.skipped or r.eps == 0:
            continue
        kind = "black" if r.attack in QUERY_BASED else "white"
        by_eps.setdefault(r.eps, {}).setdefault(kind, {}).setdefault(r.attack_id, []).append(r.dice)
    problems, compared = [], 0
    for eps, kinds in by_eps.items():
        if "black" not in kinds or "white" not in kinds:
            continue
        compared += 1
        black = min(np.mean(v) for v in kinds["black"].values())
        white = min(np.mean(v) for v in kinds["white"].values())
        if black < white - tol:
            problems.append(f"eps {eps}: black-box {black:.3f} < white-box {white:.3f}")
    if not compared:
        return _skipped("black-box not stronger", "no black-box and white-box pair")
    return _result("black-box not stronger", not problems,
                   "white-box attacks are at least as strong as black-box ones" if not problems else
                   "; ".join(problems) + ": suspect gradient masking")


def iterations_converged(records: list[AttackRecord], tol: float = 0.05) -> Check:
    per: dict = {}
    for r in records:
        if r.skipped or r.attack in QUERY_BASED or r.eps == 0:
            continue
        per.setdefault((r.attack, r.eps), {}).setdefault(r.budget, []).append(r.dice)
    notes = []
    for (attack, eps), budgets in per.items():
        b = sorted(budgets)
        if len(b) >= 2:
            drop = np.mean(budgets[b[-2]]) - np.mean(budgets[b[-1]])
            if drop > tol:
                notes.append(f"{attack} eps {eps}: {b[-2]} -> {b[-1]} iterations lowers Dice by {drop:.3f}")
    if not any(len(v) >= 2 for v in per.values()):
        return _skipped("iterations converged", "one iteration budget only")
    return _result("iterations converged", not notes,
                   "more iterations change Dice by less than %.2f" % tol if not notes else
                   "; ".join(notes) + ": results may overestimate robustness", warn=True)


def severity_zero(agreements: dict[str, float], tol: float = 1e-3) -> Check:
    """Each corruption (or artefact) at severity 0 (its identity parameter, same code path) must give the
    clean prediction: `agreements` is the share of voxels per corruption equal to it."""
    bad = {k: v for k, v in agreements.items() if v < 1 - tol}
    return _result("severity 0 is clean", not bad,
                   f"each one at severity 0 reproduces the clean prediction (min agreement "
                   f"{min(agreements.values()):.4f})" if not bad else
                   f"severity 0 changes the prediction for {sorted(bad)}: the corruption path alters clean inputs")


def monotone_in_severity(clean_dice: float, curves: dict[str, dict], tol: float = 0.02) -> Check:
    """Mean Dice should not rise with severity beyond noise (a warning: some corruptions are
    not monotone for every model, but a large rise suggests a broken transform). `curves`:
    name -> {severity key: mean Dice} (a corruption's, or an artefact's worst case)."""
    rises = []
    for name, curve in curves.items():
        levels = sorted(curve, key=int)
        dice = [clean_dice] + [curve[s] for s in levels]
        rises += [f"{name} {a}->{b}" for a, b, da, db in zip(["0", *levels], levels, dice, dice[1:]) if db > da + tol]
    return _result("Dice falls with severity", not rises,
                   f"mean Dice never rises by more than {tol} with severity" if not rises else
                   "mean Dice rises with severity: " + ", ".join(rises), warn=True)


def artefacts_in_bound(records: list[ArtefactRecord]) -> Check:
    """Every searched artefact within its severity's bound, and every worst input finite."""
    bad = [f"{r.case}/{r.artefact}/{r.severity}" for r in records if not (r.in_bound and r.finite)]
    return _result("artefacts in bound and finite", not bad,
                   f"artefacts outside their bound or non-finite inputs: {bad[:5]}" if bad else
                   f"all {len(records)} searched artefacts within their severity's bound, inputs finite")


def search_beats_draws(pairs: list[tuple[str, float, float]], draws: int, tol: float = 0.02,
                       level: float = 0.05) -> Check:
    """The search must beat random search: per case x artefact x severity (`pairs`: what,
    search Dice, the lowest Dice of `draws` fresh draws seeded apart from the search's, at
    least as many as the search started from), a one-sided sign test that the search scores
    lower more often than not (ties, e.g. an artefact that draws one value, say nothing). A
    null search that keeps its start, the worst of as many draws, wins half the pairs: it
    fails at `level`. Fresh draws that beat the search by more than `tol` anywhere fail too
    (its worst case there is understated); too few untied pairs to reach `level` warn. One
    case and artefact at several severities are not independent pairs: p is a guide."""
    name = "search beats fresh draws"
    missed = [f"{w}: draw {d:.3f} < search {s:.3f}" for w, s, d in pairs if d < s - tol]
    wins, losses = sum(s < d for _, s, d in pairs), sum(d < s for _, s, d in pairs)
    n = wins + losses
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n
    counts = (f"the search scored below the best of {draws} fresh draws in {wins} of {n} untied case x artefact "
              f"x severity pairs ({len(pairs) - n} tied; one-sided sign test p = {p:.2g})")
    if missed:
        return _result(name, False, "; ".join(missed[:5]) + f": the search misses what random draws find; {counts}")
    if 0.5 ** n > level:
        return _result(name, False, f"{counts}: too few untied pairs to vouch for the search at p < {level}",
                       warn=True)
    return _result(name, p < level, counts + ("" if p < level else ": the search does no better than random "
                                               "draws, and its worst case is random search's"))


def corrupted_finite(records: list, name=lambda r: f"{r.corruption}/{r.severity}") -> Check:
    """Every corrupted input finite; `name` says which perturbation a record is."""
    bad = [f"{r.case}/{name(r)}" for r in records if not r.finite]
    return _result("finite", not bad, f"non-finite corrupted inputs: {bad[:5]}" if bad else
                   f"all {len(records)} corrupted inputs finite")
