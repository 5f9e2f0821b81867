"""The robustness benchmark runner: clean Dice, then every attack x eps x budget per case.

Scopes: "patch" (the paper's protocol: one validation patch per case, centred on the label's
centre of mass) and "volume" (the whole case through the differentiable sliding window).
The box of both is the channel range of the whole preprocessed case. Results (JSON + CSV) are
written after every case, so a killed run resumes where it stopped; with `torchrun`, each
rank takes a disjoint subset of the cases and rank 0 merges the shards.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rog.atomic import write_json, write_text
from rog.attacks import checks
from rog.attacks.base import frozen
from rog.attacks.pgd import PGD
from rog.attacks.registry import QUERY_BASED, expand, make_attack
from rog.attacks.threat import ThreatModel
from rog.data.preprocess import load_case
from rog.data.sampling import centred_patch
from rog.evaluate.metrics import dice_per_class, mean_dice
from rog.evaluate.robustness import success_threshold, summarize
from rog.infer.sliding_window import SlidingWindow

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
        self.attacks = expand(self.attacks)
        self.eps = [float(e) for e in self.eps]
        self.iters, self.queries = [int(i) for i in self.iters], [int(q) for q in self.queries]
        if self.scope not in ("patch", "volume"):
            raise ValueError(f"unknown scope {self.scope!r}: 'patch' or 'volume'")


@dataclass
class BenchCase:
    """One case ready to attack: x `[1, C, ...]`, y `[1, ...]`, box lo/hi `[1, C, 1, 1, 1]`."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor


def load_bench_cases(data_dir: str | Path, names: list[str], scope: str, patch, device="cpu") -> list[BenchCase]:
    out = []
    for name in names:
        image, label, _ = load_case(data_dir, name, mmap=False)
        if label is None:
            raise ValueError(f"{data_dir}/{name}: no label, cannot be attacked")
        lo = torch.from_numpy(image.reshape(image.shape[0], -1).min(1)).view(1, -1, 1, 1, 1)
        hi = torch.from_numpy(image.reshape(image.shape[0], -1).max(1)).view(1, -1, 1, 1, 1)
        if scope == "patch":
            image, label = centred_patch(image, label, patch)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        y = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))[None]
        out.append(BenchCase(name, x.to(device), y.to(device), lo.to(device), hi.to(device)))
    return out


def _csv(records: list[dict]) -> str:
    cols = ["case", "attack", "eps", "budget", "dice", "broken", "norm", "seconds", "in_ball", "in_box",
            "finite", "found", "skipped"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow(r)
    return buf.getvalue()


class Benchmark:
    """Runs `config` on `model` (a patch model; wrapped in a sliding window for volume scope)."""

    def __init__(self, model: nn.Module, num_classes: int, config: BenchmarkConfig, out_dir: str | Path,
                 patch=None, progress: bool = True, meta: dict | None = None):
        """`meta` (stored as is) names the model: label, run directory and data folder."""
        self.config, self.num_classes, self.progress = config, num_classes, progress
        self.meta = meta or {}
        self.model = SlidingWindow(model, patch) if config.scope == "volume" else model
        self.out_dir = Path(out_dir)
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        suffix = f".rank{self.rank}" if self.world > 1 else ""
        self.results_path = self.out_dir / f"results{suffix}.json"
        self._logged: set[str] = set()

    def _jobs(self):
        c = self.config
        for eps in sorted(e for e in c.eps if e > 0):
            for attack in c.attacks:
                for budget in (c.queries if attack in QUERY_BASED else c.iters):
                    yield eps, attack, budget

    def _load_previous(self) -> list[dict]:
        if not self.results_path.is_file():
            return []
        prev = json.loads(self.results_path.read_text())
        if prev.get("config") != asdict(self.config):
            raise ValueError(f"{self.results_path}: written with a different configuration; "
                             "use another output folder or delete it")
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
        self.out_dir.mkdir(parents=True, exist_ok=True)
        clean = self.clean(cases)  # all cases on every rank: tau needs the task's mean
        tau = success_threshold(c["dice"] for c in clean.values())
        mine = cases[self.rank::self.world]
        records = self._load_previous()
        done = {(r["case"], r["attack_id"], r["eps"]) for r in records}
        jobs = list(self._jobs())
        bar = tqdm(total=len(mine) * len(jobs), desc=f"attack ({self.config.scope})", disable=not self.progress)
        for case in mine:
            for eps, attack, budget in jobs:
                attack_id = f"{attack}@{budget}"
                if (case.name, attack_id, eps) in done:
                    bar.update()
                    continue
                records.append(self._attack_case(case, eps, attack, budget, tau))
                bar.set_postfix(case=case.name, attack=attack, eps=eps)
                bar.update()
            self._write(records, clean, tau, final=False)  # after every case: resumable
        bar.close()
        return self._finish(records, clean, tau, cases)

    def _attack_case(self, case: BenchCase, eps: float, attack: str, budget: int, tau: float) -> dict:
        threat = ThreatModel(eps, self.config.norm)
        rec = {"case": case.name, "attack": attack, "attack_id": f"{attack}@{budget}", "eps": eps, "budget": budget}
        atk = make_attack(attack, self.model, threat, budget, self.num_classes, self.config.seed, threshold=tau)
        reason = atk.skip_reason(self.num_classes)
        if reason:
            if reason not in self._logged:
                self._logged.add(reason)
                tqdm.write(f"skipped: {reason}")
            return {**rec, "skipped": reason}
        t0 = time.perf_counter()
        x_adv = atk(case.x, case.y, case.lo, case.hi)
        seconds = time.perf_counter() - t0
        with frozen(self.model), torch.no_grad():
            pred = self.model(x_adv).argmax(1)
        d = dice_per_class(pred[0].cpu(), case.y[0].cpu(), self.num_classes)
        dice = mean_dice(d)
        span = (case.hi - case.lo)
        eps_abs = threat.radius * span
        norm = float(((x_adv - case.x).abs() / span.clamp(min=1e-12)).flatten(1).max() * 255)
        return {**rec, "dice": dice, "dice_per_class": d.tolist(), "broken": dice < tau, "norm": norm,
                "in_ball": bool(((x_adv - case.x).abs() <= eps_abs * (1 + 1e-5) + 1e-6).all())
                if self.config.norm == "linf" else norm <= eps * (1 + 1e-5),
                "in_box": bool(((x_adv >= case.lo - 1e-6) & (x_adv <= case.hi + 1e-6)).all()),
                "finite": bool(torch.isfinite(x_adv).all()), "seconds": seconds,
                "iterations": atk.info.get("iterations"), "queries": atk.info.get("queries"),
                "found": atk.info.get("found", [None])[0]}

    def _write(self, records, clean, tau, final: bool, extra: dict | None = None) -> dict:
        doc = {"config": asdict(self.config), "threat": ThreatModel(0, self.config.norm).to_dict(),
               "num_classes": self.num_classes, "tau": tau, "clean": clean, "records": records,
               "complete": final, "meta": self.meta, **(extra or {})}
        write_json(self.results_path, doc)
        write_text(self.results_path.with_suffix(".csv"), _csv(records))
        return doc

    def _finish(self, records, clean, tau, cases) -> dict:
        self._write(records, clean, tau, final=True)
        if self.world > 1:
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if self.rank != 0:
                return {}
            records = []
            for r in range(self.world):
                records += json.loads((self.out_dir / f"results.rank{r}.json").read_text())["records"]
        summary = summarize(records, clean, tau)
        extra = {"summary": summary, "checks": self._checks(records, summary, tau, cases, clean)}
        self.results_path = self.out_dir / "results.json"
        return self._write(records, clean, tau, final=True, extra=extra)

    def _checks(self, records, summary, tau, cases, clean) -> list[dict]:
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
