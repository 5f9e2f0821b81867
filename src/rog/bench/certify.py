"""The certification sweep (`rog certify`): every case x noise level, randomized smoothing of
the model's whole inference (`rog.certify.smoothing`), in the record format, folder rules,
resume and sharding of the other sweeps."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rog.attacks.base import frozen
from rog.bench import checks
from rog.bench.cases import BenchCase
from rog.bench.records import BenchError, dice_score
from rog.bench.sweep import WholeCaseSweep
from rog.certify.smoothing import CORRECTIONS, certified_dice, certify, vote_counts
from rog.corruptions import seed_of
from rog.evaluate.metrics import mean_dice
from rog.results import CertifyRecord, CertifyStats, CertifySummary, Check


@dataclass
class CertifyConfig:
    """What `rog certify` runs: the noise levels `sigmas` (sd on the range-normalised scale),
    `samples0` copies that choose each voxel's class and `samples` that estimate its
    probability, the family-wise error `alpha` per case and radius, the L2 `radii` (same
    scale), the multiple-testing `correction` ("holm" or "bonferroni"), copies per forward
    pass (`batch`) and the noise's `seed`."""

    sigmas: list[float] = field(default_factory=lambda: [0.12])
    samples0: int = 10
    samples: int = 100
    alpha: float = 0.001
    radii: list[float] = field(default_factory=lambda: [0.0, 0.03, 0.06, 0.12])
    correction: str = "holm"
    batch: int = 1
    seed: int = 0

    def __post_init__(self):
        self.sigmas = sorted({float(s) for s in self.sigmas})
        self.radii = sorted({float(r) for r in self.radii})
        if not self.sigmas or self.sigmas[0] <= 0:
            raise BenchError(f"sigmas (--sigmas) {self.sigmas}: each must be > 0")
        if not self.radii or self.radii[0] < 0:
            raise BenchError(f"radii (--radii) {self.radii}: each must be >= 0")
        for name, value in (("samples0", self.samples0), ("samples", self.samples), ("batch", self.batch)):
            if int(value) < 1:
                raise BenchError(f"{name} (--{name}) {value}: must be >= 1")
        if not 0 < self.alpha < 1:
            raise BenchError(f"alpha (--alpha) {self.alpha}: must be in (0, 1)")
        if self.correction not in CORRECTIONS:
            raise BenchError(f"correction (--correction) {self.correction!r}: one of {sorted(CORRECTIONS)}")


@dataclass(frozen=True)
class CertifyJob:
    sigma: float
    passes: int  # whole-case forward passes: n0 + n

    def cost(self, num_classes: int) -> int:
        return self.passes


class CertifySweep(WholeCaseSweep):
    """Every case x noise level of `config`: the votes of the noisy copies, the certified
    voxels per radius and the certified Dice lower bound; `run(cases)` returns the `Results`."""

    kind = "certify"

    def _jobs(self) -> list[CertifyJob]:
        c = self.config
        return [CertifyJob(s, c.samples0 + c.samples) for s in c.sigmas]

    def _key(self, r: CertifyRecord | CertifyJob) -> tuple:
        return (r.sigma,)

    def _do(self, case: BenchCase, job: CertifyJob, tau: float):
        c, k = self.config, self.num_classes
        t0 = time.perf_counter()
        model = self.model_for(case)
        g = torch.Generator(device=case.x.device).manual_seed(seed_of(case.name, f"smoothing {job.sigma}", c.seed))
        with frozen(self.model):
            votes = [vote_counts(model, case.x, case.lo, case.hi, k, job.sigma, n, c.batch, g)
                     for n in (c.samples0, c.samples)]
        ref = case.y[0].cpu().numpy()
        label, certified = certify(*votes, ref < k, job.sigma, c.alpha, c.radii, c.correction)
        bounds = [certified_dice(label, certified[r], ref, k) for r in c.radii]
        scored = max(int((ref < k).sum()), 1)
        smoothed = dice_score(torch.from_numpy(label)[None], case.y, k)
        record = CertifyRecord(case.name, job.sigma, c.samples, list(c.radii), [l2_eps(r, case.x) for r in c.radii],
                               [mean_dice(b) for b in bounds], [b.tolist() for b in bounds],
                               [float(certified[r].sum()) / scored for r in c.radii], smoothed.dice,
                               smoothed.dice_per_class, time.perf_counter() - t0, bool(torch.isfinite(case.x).all()),
                               case.x[0].numel(), (case.hi - case.lo).flatten().tolist())
        return record, None

    def _summarize(self, records, clean, tau) -> CertifySummary:
        sigmas = {}
        for s in self.config.sigmas:
            mine = [r for r in records if r.sigma == s]
            sigmas[str(s)] = CertifyStats(
                {str(r): float(np.mean([m.certified_dice[i] for m in mine])) for i, r in enumerate(self.config.radii)},
                {str(r): float(np.mean([m.certified_share[i] for m in mine])) for i, r in enumerate(self.config.radii)},
                float(np.mean([m.smoothed_dice for m in mine])), len(mine))
        return CertifySummary(tau, float(np.mean([v.dice for v in clean.values()])), sigmas)

    def _checks(self, records, summary, tau, cases) -> list[Check]:
        first = cases[0]
        return [checks.determinism(self.model_for(first), first.x)]


def l2_eps(radius: float, x: torch.Tensor) -> float:
    """`radius` (an L2 norm of the range-normalised perturbation of x `[1, C, ...]`) as `rog
    attack --norm l2 --eps` gives it: per voxel and channel, on the /255 scale."""
    return radius / math.sqrt(x[0].numel()) * 255.0

