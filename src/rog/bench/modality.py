"""The missing- or degraded-modality sweep: each input channel in turn replaced, every case
through the sliding window, Dice per case and class (the `Sweep` folder rules, resume and
sharding as every benchmark).

A replacement is "zero" (the channel set to 0 in the model's input units: on rog's grid a
z-scored channel's mean, as nnU-Net fills a missing modality), "mean" (the case's own mean of
that channel, so no intensity is out of range) or "NAME:SEVERITY", a scanner artefact of
`rog.corruptions` (TorchIO) at that severity on that channel alone, the others as acquired (a
noisy FLAIR, or with "motion" a modality moved against the others).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rog.bench import checks
from rog.bench.cases import BenchCase
from rog.bench.corruption import checked_severities
from rog.bench.records import BenchError
from rog.bench.sweep import WholeCaseSweep
from rog.corruptions import CORRUPTIONS, corrupt, foreground_sd, seed_of
from rog.evaluate.modality import summarize_modalities
from rog.results import Check, ModalityRecord, ModalitySummary

FILLS = ("zero", "mean")


def parse_replacement(text: str) -> str:
    """A replacement's canonical name ("zero", "mean", "noise:3"); anything else is a
    BenchError naming --replace."""
    if text in FILLS:
        return text
    name, _, severity = text.partition(":")
    if name not in CORRUPTIONS or not severity.isdigit():
        raise BenchError(f"replace (--replace) {text!r}: 'zero', 'mean' or CORRUPTION:SEVERITY with a corruption of "
                         f"{', '.join(CORRUPTIONS)} (e.g. noise:3)")
    return f"{name}:{checked_severities([int(severity)])[0]}"


@dataclass
class ModalityConfig:
    """`replace`: what each channel is replaced by in turn (`parse_replacement`); `channels`:
    which channels (None: every one); `seed`: of the artefacts' draws."""

    replace: list[str] = field(default_factory=lambda: ["zero", "mean"])
    channels: list[int] | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.replace:
            raise BenchError("replace (--replace): give at least one replacement")
        self.replace = list(dict.fromkeys(parse_replacement(r) for r in self.replace))
        if self.channels is not None:
            self.channels = sorted({int(c) for c in self.channels})
            if not self.channels or self.channels[0] < 0:
                raise BenchError(f"channels (--channels) {self.channels}: channel indices from 0")


@dataclass(frozen=True)
class ModalityJob:
    channel: int
    replacement: str

    def cost(self, num_classes: int) -> int:
        return 1  # one whole-case forward pass


class ModalitySweep(WholeCaseSweep):
    """Every case x channel x replacement of `config` through the sliding window (patch size
    `patch`, `spacing` mm per axis of the model input): `run(cases)` returns the `Results`."""

    kind = "modality"

    def run(self, cases: list[BenchCase]):
        c = cases[0].x.shape[1] if cases else 0
        if c < 2:
            raise BenchError(f"the model takes {c} input channel(s): a missing-modality sweep needs two or more")
        wanted = self.config.channels or list(range(c))
        if wanted[-1] >= c:
            raise BenchError(f"channels (--channels) {wanted}: the model takes channels 0 to {c - 1}")
        self._channels = wanted
        return super().run(cases)

    def _jobs(self) -> list[ModalityJob]:
        return [ModalityJob(ch, r) for ch in self._channels for r in self.config.replace]

    def _key(self, r: ModalityRecord | ModalityJob) -> tuple:
        return r.channel, r.replacement

    def replaced(self, case: BenchCase, channel: int, replacement: str) -> torch.Tensor:
        """`case.x` `[1, C, ...]` with `channel` replaced; every other channel exactly as it is."""
        x = case.x.clone()
        if replacement == "zero":
            x[:, channel] = 0
        elif replacement == "mean":
            x[:, channel] = case.x[:, channel].mean()
        else:
            name, severity = replacement.split(":")
            degraded = corrupt(case.x[0], name, int(severity), self.spacing_of(case), case.lo.flatten(),
                               case.hi.flatten(), foreground_sd(case.x[0], case.y[0]),
                               seed_of(case.name, f"{name}@{channel}", self.config.seed))
            x[0, channel] = degraded[channel]
        return x

    def _do(self, case: BenchCase, job: ModalityJob, tau: float):
        t0 = time.perf_counter()
        x = self.replaced(case, job.channel, job.replacement)
        logits, score = self._scored(case, x)
        record = ModalityRecord(case.name, job.channel, job.replacement, score.dice, score.dice_per_class,
                                time.perf_counter() - t0, bool(torch.isfinite(x).all()))
        self._keep_input(case, f"ch{job.channel}_{job.replacement.replace(':', '_s')}", x, logits)
        return record, None

    def _summarize(self, records, clean, tau) -> ModalitySummary:
        return summarize_modalities(records, clean, tau)

    def _checks(self, records, summary, tau, cases) -> list[Check]:
        model = self.model_for(cases[0])
        return [checks.determinism(model, cases[0].x),
                checks.corrupted_finite(records, lambda r: f"channel {r.channel}/{r.replacement}")]
