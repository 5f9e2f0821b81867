"""The corruption sweep: every case x corruption x severity through the sliding window, in the
same record format, folder rules and sharding as the attack benchmark (`Sweep`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rog.attacks.base import frozen
from rog.bench import checks
from rog.bench.cases import BenchCase
from rog.bench.records import BenchError
from rog.bench.sweep import WholeCaseSweep
from rog.corruptions import corrupt, expand, foreground_sd, seed_of
from rog.evaluate.corruption import summarize_corruptions
from rog.results import Check, CorruptionRecord, CorruptionSummary


@dataclass
class CorruptionConfig:
    corruptions: list[str] = field(default_factory=lambda: ["all"])
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    seed: int = 0

    def __post_init__(self):
        try:
            self.corruptions = expand(self.corruptions)
        except ValueError as e:
            raise BenchError(f"corruptions (--corruptions): {e}") from e
        self.severities = checked_severities(self.severities)


def checked_severities(severities) -> list[int]:
    """Severities sorted, each once; a BenchError naming --severities unless each is 1 to 5."""
    out = sorted({int(s) for s in severities})
    if not out or not all(1 <= s <= 5 for s in out):
        raise BenchError(f"severities (--severities) {out}: each must be 1, 2, 3, 4 or 5")
    return out


@dataclass(frozen=True)
class CorruptionJob:
    corruption: str
    severity: int

    def cost(self, num_classes: int) -> int:
        return 1  # one whole-case forward pass each


class CorruptionSweep(WholeCaseSweep):
    """Every case x corruption x severity of `config` through the sliding window (patch size
    `patch`, `spacing` in mm per axis of the model input): `run(cases)` returns the `Results`."""

    kind = "corruption"

    def _jobs(self) -> list[CorruptionJob]:
        return [CorruptionJob(c, s) for c in self.config.corruptions for s in self.config.severities]

    def _key(self, r: CorruptionRecord | CorruptionJob) -> tuple:
        return r.corruption, r.severity

    def _corrupted(self, case: BenchCase, name: str, severity: int) -> torch.Tensor:
        x = corrupt(case.x[0], name, severity, self.spacing_of(case), case.lo.flatten(), case.hi.flatten(),
                    foreground_sd(case.x[0], case.y[0]), seed_of(case.name, name, self.config.seed))
        return x[None]

    def _do(self, case: BenchCase, job: CorruptionJob, tau: float):
        t0 = time.perf_counter()
        x = self._corrupted(case, job.corruption, job.severity)
        logits, score = self._scored(case, x)
        record = CorruptionRecord(case.name, job.corruption, job.severity, score.dice, score.dice_per_class,
                                  time.perf_counter() - t0, bool(torch.isfinite(x).all()))
        self._keep_input(case, f"{job.corruption}_s{job.severity}", x, logits)
        return record, None

    def _summarize(self, records, clean, tau) -> CorruptionSummary:
        return summarize_corruptions(records, clean)

    def _checks(self, records, summary, tau, cases) -> list[Check]:
        first = cases[0]
        model = self.model_for(first)
        with frozen(self.model), torch.no_grad():
            clean = model(first.x).argmax(1)
            agreement = {c: float((model(self._corrupted(first, c, 0)).argmax(1) == clean).float().mean())
                         for c in self.config.corruptions}
        curves = {n: c.severity for n, c in summary.corruptions.items()}
        return [checks.severity_zero(agreement), checks.monotone_in_severity(summary.clean_dice, curves),
                checks.determinism(model, first.x), checks.corrupted_finite(records)]
