"""The worst-case artefact sweep (`rog artefact`): every case x artefact x severity, random
draws and the search on the artefact's parameters (`rog.artefacts`), whole cases through the
sliding window, in the record format, folder rules and sharding of the other sweeps."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rog.artefacts.models import expand, make_artefact
from rog.artefacts.search import SEARCHES, apply, worst_artefact
from rog.attacks.base import frozen
from rog.bench import checks
from rog.bench import records as rec
from rog.bench.cases import BenchCase
from rog.bench.corruption import checked_severities
from rog.bench.records import BenchError
from rog.bench.sweep import WholeCaseSweep
from rog.corruptions import foreground_sd, seed_of
from rog.evaluate.artefact import summarize_artefacts
from rog.evaluate.metrics import dice_batch
from rog.results import ArtefactRecord, ArtefactSummary, Check

FRESH_DRAWS = 10  # the validity check's fewest draws, seeded apart from the search's


@dataclass
class ArtefactConfig:
    """What `rog artefact` runs: `artefacts` (names of `rog.artefacts.ARTEFACTS`, "all"),
    `severities` (1-5, `rog.corruptions`' scale), `draws` random draws per case, artefact and
    severity, APGD's `iters` (0: draws only) and `restarts` (the first from the worst draw),
    its `loss` ("dice" or "ce"), the `search` ("apgd", "random", derivative-free, or "auto": each
    artefact's own, random where no gradient reaches the parameters, `rog.artefacts.search`) and the `seed` of draws and starts."""

    artefacts: list[str] = field(default_factory=lambda: ["all"])
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])
    draws: int = 10
    iters: int = 10
    restarts: int = 2
    loss: str = "dice"
    search: str = "auto"
    seed: int = 0

    def __post_init__(self):
        try:
            self.artefacts = expand(self.artefacts)
        except ValueError as e:
            raise BenchError(f"artefacts (--artefacts): {e}") from e
        self.severities = checked_severities(self.severities)
        for name, value, low in (("draws", self.draws, 1), ("iters", self.iters, 0), ("restarts", self.restarts, 1)):
            if int(value) < low:
                raise BenchError(f"{name} (--{name}) {value}: must be >= {low}")
        if self.loss not in ("dice", "ce"):
            raise BenchError(f"loss (--loss) {self.loss!r}: 'dice' or 'ce'")
        if self.search not in ("auto", *SEARCHES):
            raise BenchError(f"search (--search) {self.search!r}: one of auto, {', '.join(SEARCHES)}")


@dataclass(frozen=True)
class ArtefactJob:
    artefact: str
    severity: int
    draws: int
    passes: int  # forward and backward passes of the search

    def cost(self, num_classes: int) -> int:
        return self.draws + 3 * self.passes  # a backward pass costs about two forward ones


class ArtefactSweep(WholeCaseSweep):
    """Every case x artefact x severity of `config` through the sliding window (patch size
    `patch`; `spacing` in mm per axis of the model input): `run(cases)` returns the `Results`."""

    kind = "artefact"

    def _jobs(self) -> list[ArtefactJob]:
        c = self.config
        passes = c.restarts * (c.iters + 1) if c.iters else 0
        return [ArtefactJob(a, s, c.draws, passes) for a in c.artefacts for s in c.severities]

    def _key(self, r: ArtefactRecord | ArtefactJob) -> tuple:
        return r.artefact, r.severity

    def artefact(self, case: BenchCase, name: str, severity: int):
        """The artefact `name` at `severity` for `case` (its noise unit: foreground sd / range)."""
        unit = foreground_sd(case.x[0], case.y[0]) / (case.hi - case.lo).flatten().clamp(min=1e-12)
        return make_artefact(name, severity, self.spacing_of(case), unit)

    def _do(self, case: BenchCase, job: ArtefactJob, tau: float):
        c = self.config
        t0 = time.perf_counter()
        art = self.artefact(case, job.artefact, job.severity)
        model = self.model_for(case)
        found = worst_artefact(model, art, case.x, case.y, case.lo, case.hi, self.num_classes, c.draws, c.iters,
                               c.restarts, seed_of(case.name, job.artefact, c.seed), c.loss, c.search)
        x = apply(art, case.x, found.t[None], case.lo, case.hi)
        logits, score = self._scored(case, x)
        record = ArtefactRecord(case.name, job.artefact, job.severity, score.dice, score.dice_per_class,
                                found.random_dice, found.random_worst, found.search_dice, found.by,
                                art.describe(found.t, tuple(case.x.shape[1:])), found.draws, found.iterations,
                                time.perf_counter() - t0, found.in_bound, bool(torch.isfinite(x).all()), found.method)
        self._keep_input(case, f"{job.artefact}_s{job.severity}", x, logits)
        return record, x

    def _after_case(self, case: BenchCase, outputs, first: bool, earlier: list, tau: float) -> None:
        """The report's slice of each artefact's worst case at its highest severity, first case
        (a record of an earlier, interrupted run: its input made again, `_input_of`)."""
        if not first:
            return
        top = max(self.config.severities)
        worst = {f"{r.artefact} s{r.severity}": self._input_of(case, r, x, tau)
                 for r, x in [(r, None) for r in earlier] + outputs if r.severity == top}
        if not worst:
            return
        model = self.model_for(case)
        panels = self.out.read_qualitative()
        with frozen(self.model), torch.no_grad():
            clean = model(case.x).argmax(1)
            panels.update({k: rec.qualitative_slice(case.x, case.y, clean, model(x).argmax(1), x, case.lo, case.hi, k)
                           for k, x in worst.items()})
        self.out.write_qualitative(panels)

    def _summarize(self, records, clean, tau) -> ArtefactSummary:
        return summarize_artefacts(records, clean, tau)

    def _checks(self, records, summary, tau, cases) -> list[Check]:
        first = cases[0]
        model = self.model_for(first)
        with frozen(self.model), torch.no_grad():
            clean = model(first.x).argmax(1)
            agreement = {}
            for name in self.config.artefacts:
                art = self.artefact(first, name, 0)
                t = art.draw(1, tuple(first.x.shape[1:]), torch.Generator().manual_seed(1)).to(first.x)
                agreement[name] = float((model(apply(art, first.x, t, first.lo, first.hi)).argmax(1) == clean)
                                        .float().mean())
        curves = {n: a.worst for n, a in summary.artefacts.items()}
        return [checks.severity_zero(agreement), checks.monotone_in_severity(summary.clean_dice, curves),
                checks.determinism(model, first.x), checks.artefacts_in_bound(records),
                checks.search_beats_draws(self._fresh_draws(records, cases), self.fresh_draws)]

    @property
    def fresh_draws(self) -> int:
        """The check's draws per case x artefact x severity: at least as many as the search's."""
        return max(FRESH_DRAWS, self.config.draws)

    def _fresh_draws(self, records: list[ArtefactRecord], cases: list[BenchCase]) -> list[tuple[str, float, float]]:
        """(case/artefact/severity, search Dice, lowest Dice of `fresh_draws` new draws) for
        every record: draws the search never started from (another seed)."""
        search = {(r.case, r.artefact, r.severity): r.search_dice for r in records}
        out = []
        for case in cases:
            model = self.model_for(case)
            shape = tuple(case.x.shape[1:])
            for (name, severity) in ((a, s) for a in self.config.artefacts for s in self.config.severities):
                if (case.name, name, severity) not in search:
                    continue
                art = self.artefact(case, name, severity)
                g = torch.Generator().manual_seed(seed_of(case.name, f"{name}{severity}", self.config.seed + 1))
                draws = art.draw(1 if art.deterministic else self.fresh_draws, shape, g).to(case.x)
                with frozen(self.model), torch.no_grad():
                    dice = min(float(dice_batch(model(apply(art, case.x, t[None], case.lo, case.hi)).argmax(1),
                                                case.y, self.num_classes)[0]) for t in draws)
                out.append((f"{case.name}/{name}/s{severity}", search[case.name, name, severity], dice))
        return out
