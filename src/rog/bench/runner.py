"""The robustness benchmark runner: clean Dice, then every attack x eps x budget per case.

Scopes: "patch" (the paper's protocol: one patch per case, centred on the label's centre of
mass) and "volume" (the whole case through the differentiable sliding window). The box of
both is the channel range of the whole preprocessed case. Results (JSON + CSV) are written
after every case, so a killed run resumes where it stopped; a results folder records what
produced it (configuration, cases, model weights) and refuses to be continued by anything
else. With `torchrun`, each rank takes a disjoint subset of the cases and rank 0 merges the
shards. The runner also records what the report draws: the qualitative arrays of the worst
attack on one case at every eps, and whatever the caller puts in `meta` (model summary).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rog.attacks.base import frozen
from rog.attacks.pgd import PGD
from rog.attacks.registry import QUERY_BASED, expand, expected_cost, make_attack
from rog.attacks.threat import ThreatModel
from rog.bench import checks, records as rec
from rog.bench.cases import BenchCase
from rog.bench.sweep import Sweep
from rog.bench.units import UNITS, range_eps
from rog.evaluate.lesions import match_lesions
from rog.evaluate.robustness import summarize
from rog.infer.sliding_window import SlidingWindow
from rog.messages import log
from rog.results import AttackRecord, AttackSummary, Check, Meta, Results

LARGE_EPS = 128.0
LARGE_EPS_ITERS = 10


@dataclass
class BenchmarkConfig:
    """The attacks of a benchmark: `eps` in `eps_unit` (`rog.bench.units.UNITS`: "range", the
    /255 scale of each channel's range, "hu" or "sd"), `eps_channels` each channel's multiple
    of eps (None: 1 on every channel; 0 leaves a channel untouched), `attacks` names (or
    "standard", "plus"), `iters` of the gradient attacks and `queries` of Square (one run per
    value), `scope` "patch" or "volume" (None: the model's default, which `rog.pipeline.sweeps`
    sets before a `Benchmark` runs), `norm` "linf" or "l2", `seed` of the random draws."""

    eps: list[float] = field(default_factory=lambda: [4.0, 8.0, 12.0, 16.0])
    attacks: list[str] = field(default_factory=lambda: ["standard"])
    iters: list[int] = field(default_factory=lambda: [5])
    queries: list[int] = field(default_factory=lambda: [500])
    scope: str | None = "patch"
    norm: str = "linf"
    seed: int = 0
    eps_unit: str = "range"
    eps_channels: list[float] | None = None

    def __post_init__(self):
        try:
            self.attacks = expand(self.attacks)
        except ValueError as e:
            raise rec.BenchError(f"attacks (--attacks): {e}") from e
        self.eps = [float(e) for e in self.eps]
        self.iters, self.queries = [int(i) for i in self.iters], [int(q) for q in self.queries]
        # each error names the field and its command-line flag: Python and CLI users read the same
        if self.eps_unit not in UNITS:
            raise rec.BenchError(f"eps_unit (--eps-unit): unknown unit {self.eps_unit!r}: one of {', '.join(UNITS)}")
        eps_rule = ((lambda v: 0 < v <= 255, "in (0, 255] (the /255 scale)") if self.eps_unit == "range"
                    else (lambda v: v > 0, f"> 0 ({UNITS[self.eps_unit]})"))
        if self.eps_channels is not None:
            self.eps_channels = [float(w) for w in self.eps_channels]
            if not self.eps_channels or min(self.eps_channels) < 0 or max(self.eps_channels) <= 0:
                raise rec.BenchError(f"eps_channels (--eps-channels) {self.eps_channels}: one value >= 0 per input "
                                     "channel, at least one of them > 0")
        for name, values, ok, rule in (("eps", self.eps, *eps_rule),
                                       ("iters", self.iters, lambda v: v >= 1, ">= 1"),
                                       ("queries", self.queries, lambda v: v >= 1, ">= 1")):
            if not values or not all(ok(v) for v in values):
                raise rec.BenchError(f"{name} (--{name}) {values}: each must be {rule}")
        if self.scope not in ("patch", "volume", None):
            raise rec.BenchError(f"scope (--scope): unknown scope {self.scope!r}: 'patch' or 'volume'")


@dataclass(frozen=True)
class AttackJob:
    eps: float
    attack: str
    budget: int  # iterations, or queries of a query-based attack

    @property
    def attack_id(self) -> str:
        return f"{self.attack}@{self.budget}"

    def cost(self, num_classes: int) -> int:
        return expected_cost(self.attack, self.budget, num_classes)


class Benchmark(Sweep):
    """Runs `config` on `model` (a patch model; wrapped in a sliding window for volume scope)."""

    kind = "attack"

    def __init__(self, model: nn.Module, num_classes: int, config: BenchmarkConfig, out_dir: str | Path,
                 patch=None, progress: bool = True, meta: Meta | None = None, weights: str | None = None,
                 window: dict | None = None, keep=None, spacing=None):
        if config.scope is None:
            raise rec.BenchError("scope (--scope): None, the model's default, is set by rog.pipeline.sweeps; "
                                 "give 'patch' or 'volume' to a Benchmark")
        super().__init__(model, num_classes, config, out_dir, patch, progress, meta, weights,
                         volume=config.scope == "volume", window=window, keep=keep, spacing=spacing)
        self._logged: set[str] = set()
        self._clean_lesions: dict[str, dict] = {}
        self._attack_configs: dict[str, dict] = {}

    def _jobs(self) -> list[AttackJob]:
        c = self.config
        return [AttackJob(eps, attack, budget)
                for eps in sorted(c.eps) for attack in c.attacks
                for budget in (c.queries if attack in QUERY_BASED else c.iters)]

    def _key(self, r: AttackRecord | AttackJob) -> tuple:
        return r.attack_id, r.eps

    def _complete(self, results: Results) -> None:
        c = self.config
        results.threat = ThreatModel.exactly(c.eps[0], c.norm).to_dict(eps=c.eps)
        results.threat.update(unit=c.eps_unit, channels=c.eps_channels)
        if c.eps_unit != "range" or c.eps_channels:  # the radius of each record is its channel_eps on that scale
            results.threat["scale"] = UNITS[c.eps_unit] + (f", times {c.eps_channels} per channel" if c.eps_channels else "")
        results.attack_configs = self._attack_configs

    def _after_case(self, case: BenchCase, outputs, first: bool, earlier: list, tau: float) -> None:
        """The qualitative arrays of the worst attack per eps, for the first case (by name); with
        `keep`, the worst attack's whole input per eps for every case. The worst may be a record
        of an earlier, interrupted run: its input is made again (`_input_of`)."""
        if not (first or self.keep is not None):
            return
        found: dict[str, tuple[float, object, torch.Tensor | None]] = {}
        for record, x_adv in [(r, None) for r in earlier] + outputs:
            if record.dice is not None and record.dice < found.get(str(record.eps), (2.0, None, None))[0]:
                found[str(record.eps)] = (record.dice, record, x_adv)
        worst = {eps: (r.attack_id, self._input_of(case, r, x, tau)) for eps, (d, r, x) in found.items()}
        model = self.model_for(case)
        if self.keep is not None and worst:
            self._keep(case, model, worst)
        if not (first and worst):
            return
        panels = self.out.read_qualitative()
        with frozen(self.model), torch.no_grad():
            clean = model(case.x).argmax(1)
            panels.update({eps: rec.qualitative_slice(case.x, case.y, clean, model(x_adv).argmax(1), x_adv, case.lo,
                                                      case.hi, by) for eps, (by, x_adv) in worst.items()})
        self.out.write_qualitative(panels)

    def _keep(self, case: BenchCase, model: nn.Module, worst: dict) -> None:
        """Write the clean case and the worst attack per eps as whole cases: a patch is put back
        into its case, and the whole case predicted through the sliding window."""
        patch = self.config.scope == "patch"
        whole = SlidingWindow(model, self.patch) if patch else model
        with frozen(self.model), torch.no_grad():
            for tag, x in [("clean", case.x)] + [(f"eps{e}", x) for e, (_, x) in
                                                 sorted(worst.items(), key=lambda kv: float(kv[0]))]:
                x = self.keep.placed(case.name, x, self.patch) if patch else x
                self.keep.write(case.name, tag, x, whole(x))

    def _do(self, case: BenchCase, job: AttackJob, tau: float):
        threat = self._threat(case, job.eps)
        head = dict(case=case.name, attack=job.attack, attack_id=job.attack_id, eps=job.eps, budget=job.budget)
        if threat.per_channel or self.config.eps_unit != "range":
            head.update(channel_eps=torch.as_tensor(threat.eps, dtype=torch.float64).flatten().expand(case.x.shape[1]).tolist())
        model = self.model_for(case)
        atk = make_attack(job.attack, model, threat, job.budget, self.num_classes, self.config.seed, threshold=tau)
        reason = atk.skip_reason(self.num_classes)
        if reason:
            if reason not in self._logged:
                self._logged.add(reason)
                log.info(f"skipped: {reason}")
            return AttackRecord(**head, skipped=reason), None
        self._attack_configs.setdefault(job.attack_id, atk.config(threat=False))
        t0 = time.perf_counter()
        x_adv = atk(case.x, case.y, case.lo, case.hi)
        seconds = time.perf_counter() - t0
        x_adv = case.held(x_adv)  # what the attack put on fixed voxels changed nothing: recorded as untouched
        with frozen(self.model), torch.no_grad():
            pred = model(x_adv).argmax(1)
        record = rec.measure(head, pred, case.y, x_adv, case.x, case.lo, case.hi, threat, self.num_classes, tau,
                             seconds=seconds, **atk.counters())
        record.lesions = self._lesions(case, model, pred)
        return record, x_adv

    def _threat(self, case: BenchCase, eps: float) -> ThreatModel:
        """The threat of `eps` (in the config's unit and channel multiples) on `case`, on the
        /255 scale of its channel ranges; --eps below 1 is allowed, with a note."""
        c = self.config
        radius = range_eps(case, eps, c.eps_unit, c.eps_channels)
        if torch.is_tensor(radius) and c.norm != "linf":
            raise rec.BenchError(f"--norm {c.norm}: case {case.name}'s channels get radii of their own (--eps-unit "
                                 f"{c.eps_unit}{', --eps-channels' if c.eps_channels else ''}): only linf takes them")
        return ThreatModel.exactly(radius, c.norm)

    def _lesions(self, case: BenchCase, model: nn.Module, pred: torch.Tensor) -> dict:
        """The lesion counts of the attacked prediction `pred` `[1, ...]` (`rog.evaluate.lesions`),
        with the clean prediction's misses ("clean_missed") and the volume change from it."""
        ref, spacing = case.y[0].cpu().numpy(), self.spacing_of(case)
        if case.name not in self._clean_lesions:
            with frozen(self.model), torch.no_grad():
                clean = model(case.x).argmax(1)[0].cpu().numpy()
            self._clean_lesions[case.name] = match_lesions(clean, ref, self.num_classes, spacing)
        clean = self._clean_lesions[case.name]
        got = match_lesions(pred[0].cpu().numpy(), ref, self.num_classes, spacing)
        return {**got, "clean_missed": clean["missed"],
                "volume_change": [a - b for a, b in zip(got["volume"], clean["volume"])]}

    def _summarize(self, records, clean, tau) -> AttackSummary:
        return summarize(records, clean, tau)

    def _checks(self, records, summary, tau, cases) -> list[Check]:
        first = cases[0]
        model = self.model_for(first)
        out = [checks.ball_box_finite(records), checks.determinism(model, first.x),
               checks.input_gradients([(c.name, self.model_for(c), c.x, c.y) for c in cases]),
               checks.logits_not_probabilities(model, first.x), checks.monotone_in_eps(summary),
               checks.blackbox_not_stronger(records), checks.iterations_converged(records)]
        dice = []
        for c in cases[:2]:
            # its own budget: the run's (1-2 iterations in a quick sweep) would fail a sound model
            large = PGD(self.model_for(c), ThreatModel(LARGE_EPS, self.config.norm), iters=LARGE_EPS_ITERS,
                        num_classes=self.num_classes, seed=self.config.seed)
            large(c.x, c.y, c.lo, c.hi)
            dice += large.info["dice"]
        out.append(checks.large_eps(float(np.mean(dice)), tau, LARGE_EPS, LARGE_EPS_ITERS, summary.clean_dice))
        return out
