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

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rog.atomic import write_json, write_text
from rog.attacks.base import frozen
from rog.attacks.pgd import PGD
from rog.attacks.registry import QUERY_BASED, expand, make_attack
from rog.attacks.threat import ThreatModel
from rog.bench import checks, records as rec
from rog.bench.cases import BenchCase
from rog.bench.sharding import merged_records, rank_and_world, wait_for_ranks
from rog.evaluate.metrics import dice_per_class, mean_dice
from rog.evaluate.robustness import success_threshold, summarize
from rog.infer.sliding_window import SlidingWindow
from rog.rundir import ResultsDir

LARGE_EPS = 128.0


@dataclass
class BenchmarkConfig:
    eps: list[float] = field(default_factory=lambda: [4.0, 8.0, 12.0, 16.0])
    attacks: list[str] = field(default_factory=lambda: ["standard"])
    iters: list[int] = field(default_factory=lambda: [5])
    queries: list[int] = field(default_factory=lambda: [500])
    scope: str = "patch"
    norm: str = "linf"
    seed: int = 0

    def __post_init__(self):
        try:
            self.attacks = expand(self.attacks)
        except ValueError as e:
            raise rec.BenchError(f"--attacks: {e}") from e
        self.eps = [float(e) for e in self.eps]
        self.iters, self.queries = [int(i) for i in self.iters], [int(q) for q in self.queries]
        for name, values, ok, rule in (("--eps", self.eps, lambda v: 0 < v <= 255, "in (0, 255] (the /255 scale)"),
                                       ("--iters", self.iters, lambda v: v >= 1, ">= 1"),
                                       ("--queries", self.queries, lambda v: v >= 1, ">= 1")):
            if not values or not all(ok(v) for v in values):
                raise rec.BenchError(f"{name} {values}: each must be {rule}")
        if self.scope not in ("patch", "volume"):
            raise rec.BenchError(f"--scope: unknown scope {self.scope!r}: 'patch' or 'volume'")


class Benchmark:
    """Runs `config` on `model` (a patch model; wrapped in a sliding window for volume scope)."""

    def __init__(self, model: nn.Module, num_classes: int, config: BenchmarkConfig, out_dir: str | Path,
                 patch=None, progress: bool = True, meta: dict | None = None, weights: str | None = None):
        """`meta` (stored as is) describes the model for the report: label, run, data, model
        summary, class names, where the cases come from. `weights` identifies the model's
        weights (a checkpoint hash): a results folder is only ever continued with the same."""
        self.config, self.num_classes, self.progress = config, num_classes, progress
        self.meta, self.weights = meta or {}, weights
        self.model = SlidingWindow(model, patch) if config.scope == "volume" else model
        self.out = ResultsDir(out_dir)
        self.rank, self.world = rank_and_world()
        self.shard = self.rank if self.world > 1 else None
        self._logged: set[str] = set()
        self._attack_configs: dict[str, dict] = {}

    def _jobs(self):
        c = self.config
        for eps in sorted(e for e in c.eps if e > 0):
            for attack in c.attacks:
                for budget in (c.queries if attack in QUERY_BASED else c.iters):
                    yield eps, attack, budget

    def _load_previous(self, provenance: dict) -> list[dict]:
        path = self.out.results(self.shard)
        if not path.is_file():
            return []
        prev = json.loads(path.read_text())
        why = rec.provenance_mismatch(prev.get("provenance", {"config": prev.get("config")}), provenance)
        if why:
            raise rec.BenchError(f"{path}: {why}; use another output folder or delete it")
        return prev["records"]

    def clean(self, cases: list[BenchCase]) -> dict[str, dict]:
        out = {}
        with frozen(self.model), torch.no_grad():
            for c in cases:
                pred = self.model(c.x).argmax(1)
                d = dice_per_class(pred[0].cpu(), c.y[0].cpu(), self.num_classes)
                out[c.name] = {"dice": mean_dice(d), "dice_per_class": d.tolist()}
        return out

    def run(self, cases: list[BenchCase]) -> dict:
        """Attack `cases`; returns the results document (on rank 0; {} on the others)."""
        self.out.path.mkdir(parents=True, exist_ok=True)
        provenance = {"config": asdict(self.config), "cases": sorted(c.name for c in cases), "weights": self.weights}
        records = self._load_previous(provenance)
        clean = self.clean(cases)  # all cases on every rank: tau needs the task's mean
        tau = success_threshold(c["dice"] for c in clean.values())
        panel_case = min(c.name for c in cases)
        panels = rec.load_qualitative(self.out.qualitative)
        mine = cases[self.rank::self.world]
        done = {(r["case"], r["attack_id"], r["eps"]) for r in records}
        jobs = list(self._jobs())
        bar = tqdm(total=len(mine) * len(jobs), desc=f"attack ({self.config.scope})", disable=not self.progress)
        for case in mine:
            worst: dict[str, tuple[float, torch.Tensor]] = {}
            for eps, attack, budget in jobs:
                attack_id = f"{attack}@{budget}"
                if (case.name, attack_id, eps) in done:
                    bar.update()
                    continue
                record, x_adv = self._attack_case(case, eps, attack, budget, tau)
                records.append(record)
                if x_adv is not None and record["dice"] < worst.get(str(eps), (2.0, None))[0]:
                    worst[str(eps)] = (record["dice"], x_adv)
                bar.set_postfix(case=case.name, attack=attack, eps=eps)
                bar.update()
            if case.name == panel_case and worst:
                panels.update(self._panels(case, worst))
                rec.save_qualitative(self.out.qualitative, panels)
            self._write(records, clean, tau, provenance, final=False)  # after every case: resumable
        bar.close()
        return self._finish(records, clean, tau, provenance, cases)

    def _panels(self, case: BenchCase, worst: dict) -> dict:
        with frozen(self.model), torch.no_grad():
            clean = self.model(case.x).argmax(1)
            return {eps: rec.qualitative_slice(case.x, case.y, clean, self.model(x_adv).argmax(1), x_adv)
                    for eps, (_, x_adv) in worst.items()}

    def _attack_case(self, case: BenchCase, eps: float, attack: str, budget: int, tau: float):
        threat = ThreatModel(eps, self.config.norm)
        head = {"case": case.name, "attack": attack, "attack_id": f"{attack}@{budget}", "eps": eps, "budget": budget}
        atk = make_attack(attack, self.model, threat, budget, self.num_classes, self.config.seed, threshold=tau)
        reason = atk.skip_reason(self.num_classes)
        if reason:
            if reason not in self._logged:
                self._logged.add(reason)
                tqdm.write(f"skipped: {reason}")
            return {**head, "skipped": reason}, None
        self._attack_configs.setdefault(head["attack_id"], {k: v for k, v in atk.config().items() if k != "threat"})
        t0 = time.perf_counter()
        x_adv = atk(case.x, case.y, case.lo, case.hi)
        seconds = time.perf_counter() - t0
        with frozen(self.model), torch.no_grad():
            pred = self.model(x_adv).argmax(1)
        fields = rec.measure(pred, case.y, x_adv, case.x, case.lo, case.hi, threat, self.num_classes, tau)
        info = atk.info
        return {**head, **fields, "seconds": seconds, "iterations": info.get("iterations"),
                "queries": info.get("queries"), "noop_queries": info.get("noop_queries"),
                "found": info.get("found", [None])[0], "reason": info.get("reason", [None])[0]}, x_adv

    def _write(self, records, clean, tau, provenance, final: bool, shard=-1, extra: dict | None = None) -> dict:
        shard = self.shard if shard == -1 else shard
        threat = {**ThreatModel(self.config.eps[0], self.config.norm).to_dict(), "eps": self.config.eps}
        doc = {"config": asdict(self.config), "threat": threat,
               "num_classes": self.num_classes, "tau": tau, "clean": clean, "records": records,
               "complete": final, "meta": self.meta, "provenance": provenance,
               "attack_configs": self._attack_configs, **(extra or {})}
        write_json(self.out.results(shard), doc)
        write_text(self.out.csv(shard), rec.to_csv(records))
        return doc

    def _finish(self, records, clean, tau, provenance, cases) -> dict:
        self._write(records, clean, tau, provenance, final=True)
        if self.world > 1:
            wait_for_ranks()
            if self.rank != 0:
                return {}
            records = merged_records(self.out, self.world)
        summary = summarize(records, clean, tau)
        extra = {"summary": summary, "checks": self._checks(records, summary, tau, cases)}
        return self._write(records, clean, tau, provenance, final=True, shard=None, extra=extra)

    def _checks(self, records, summary, tau, cases) -> list[dict]:
        first = cases[0]
        out = [checks.ball_box_finite(records), checks.determinism(self.model, first.x),
               checks.input_gradients(self.model, first.x, first.y), checks.monotone_in_eps(summary),
               checks.blackbox_not_stronger(records), checks.iterations_converged(records)]
        large = PGD(self.model, ThreatModel(LARGE_EPS, self.config.norm), iters=max(self.config.iters),
                    num_classes=self.num_classes, seed=self.config.seed)
        dice = []
        for c in cases[:2]:
            large(c.x, c.y, c.lo, c.hi)
            dice += large.info["dice"]
        out.append(checks.large_eps(float(np.mean(dice)), tau, LARGE_EPS))
        return out
