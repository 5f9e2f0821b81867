"""Making result records (`rog.results`): one per case x attack x eps x budget, the CSV view
of them and the qualitative slice the report draws.

A record holds the Dice (mean over foreground classes and per class) at the attack's output,
whether it broke the case (Dice < tau), the perturbation size on the /255 scale, the validity
flags (inside the ball, inside the box, finite), the runtime and the attack's own counters.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict

import numpy as np
import torch

from rog.attacks.threat import ThreatModel
from rog.errors import RogError
from rog.evaluate.metrics import dice_per_class, mean_dice
from rog.results import AttackRecord, Score


class BenchError(RogError):
    """A benchmark cannot run as asked (an unknown attack or scope, a results folder written
    by another configuration, case list or model); the message names the argument or file."""


def dice_score(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> Score:
    """Dice (mean over foreground classes and per class) of a prediction `[1, ...]` against
    labels `[1, ...]`: the Dice of every record and of the clean scores."""
    d = dice_per_class(pred[0].cpu(), y[0].cpu(), num_classes)
    return Score(mean_dice(d), d.tolist())


def measure(head: dict, pred: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, x: torch.Tensor,
            lo: torch.Tensor, hi: torch.Tensor, threat: ThreatModel, num_classes: int, tau: float,
            **extra) -> AttackRecord:
    """The record of one instance: `head` names it (case, attack, attack id, eps, budget);
    pred and y `[1, ...]` (labels), x_adv, x `[1, C, ...]`, lo/hi `[1, C, 1, ...]`; `extra`:
    the attack's counters. The size is on the /255 scale of the channel ranges, in the
    threat's norm (L2: of the range-normalised perturbation over sqrt(#voxels))."""
    score = dice_score(pred, y, num_classes)
    span = (hi - lo).clamp(min=1e-12)
    size = float(threat.norm_of((x_adv - lo) / span, (x - lo) / span)[0])
    # x_adv is the attack's raw output: the tolerances allow float rounding of the trip through
    # range-normalised coordinates (relative to the channel's range), nothing more
    slack = 1e-5 * span
    if threat.norm == "linf":
        in_ball = bool(((x_adv - x).abs() <= threat.radius_of(lo, hi) + slack).all())
    else:
        in_ball = size <= threat.eps * (1 + 1e-5) + 1e-6
    return AttackRecord(**head, dice=score.dice, dice_per_class=score.dice_per_class, broken=score.dice < tau,
                        norm=size, in_ball=in_ball, in_box=bool(((x_adv >= lo - slack) & (x_adv <= hi + slack)).all()),
                        finite=bool(torch.isfinite(x_adv).all()), **extra)


def to_csv(records: list, columns: list[str]) -> str:
    """The CSV view of typed records (`rog.results`), `columns` only."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(asdict(r) for r in records)
    return buf.getvalue()


def qualitative_slice(x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, adv: torch.Tensor,
                      x_adv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, by: str) -> dict[str, np.ndarray]:
    """2-D arrays for the report's qualitative figure, at the slice of the last spatial axis
    with the most labelled voxels (the reference's, so that every model of a case is shown on
    one slice): image (channel 0), ground truth, clean and perturbed predictions, the
    perturbation of channel 0 on the threat's scale (/255 of its range) and "winner", `by`:
    what made it (the attack, or the artefact). x, x_adv `[1, C, D, H, W]`; y, clean, adv `[1, D, H, W]`;
    lo, hi `[1, C, 1, 1, 1]` (the box)."""
    labelled = (y[0] > 0).sum(dim=(0, 1))
    z = int(labelled.argmax()) if bool(labelled.any()) else y.shape[-1] // 2
    take = lambda t: t[..., z].cpu().numpy()  # noqa: E731
    span = (hi - lo)[0, 0].clamp(min=1e-12)
    return {"image": take(x[0, 0]).astype(np.float32), "gt": take(y[0]).astype(np.uint8),
            "clean": take(clean[0]).astype(np.uint8), "adv": take(adv[0]).astype(np.uint8),
            "delta": take((x_adv[0, 0] - x[0, 0]) / span * 255).astype(np.float32), "slice": np.array(z),
            "winner": np.array(by)}
