"""What the attack benchmark and the corruption sweep share: a model evaluated on cases x
jobs, clean Dice and tau first, records written after every case (so a killed run resumes),
a results folder continued only under the same provenance, torchrun sharding, and a summary
with validity checks at the end. Subclasses say what a job is and how it is measured."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from rog.atomic import write_json, write_text
from rog.attacks.base import frozen
from rog.bench import records as rec
from rog.bench.cases import BenchCase
from rog.bench.sharding import merged_records, rank_and_world, wait_for_ranks
from rog.evaluate.robustness import success_threshold
from rog.infer.sliding_window import SlidingWindow
from rog.rundir import ResultsDir


class Sweep:
    """`kind` names the results ("attack" or "corruption"); subclasses implement `_jobs`,
    `_key`, `_do`, `_summarize`, `_checks` and may extend `_doc` and `_after_case`."""

    kind = ""
    csv_columns: list[str] = []

    def __init__(self, model: nn.Module, num_classes: int, config, out_dir: str | Path, patch=None,
                 progress: bool = True, meta: dict | None = None, weights: str | None = None,
                 volume: bool = False, window: dict | None = None):
        """`meta` (stored as is) describes the model for the report: label, run, data, model
        summary, class names, where the cases come from. `weights` identifies the model's
        weights (a checkpoint hash): a results folder is only ever continued with the same.
        `volume`: whole cases through the sliding window (patch size `patch`; `window`: more
        `SlidingWindow` options, such as an external tool's mirroring and tiling style)."""
        self.config, self.num_classes, self.progress = config, num_classes, progress
        self.meta, self.weights = meta or {}, weights
        self.model = SlidingWindow(model, patch, **(window or {})) if volume else model
        self.out = ResultsDir(out_dir)
        self.rank, self.world = rank_and_world()
        self.shard = self.rank if self.world > 1 else None

    # ---- what subclasses define ------------------------------------------------------------
    def _jobs(self) -> list[dict]:
        raise NotImplementedError

    def _key(self, record_or_job: dict) -> tuple:
        raise NotImplementedError

    def _do(self, case: BenchCase, job: dict, tau: float) -> tuple[dict, torch.Tensor | None]:
        raise NotImplementedError

    def _summarize(self, records: list[dict], clean: dict, tau: float) -> dict:
        raise NotImplementedError

    def _checks(self, records: list[dict], summary: dict, tau: float, cases: list[BenchCase]) -> list[dict]:
        raise NotImplementedError

    def _doc(self) -> dict:
        return {}

    def _after_case(self, case: BenchCase, outputs: list[tuple[dict, torch.Tensor | None]], first: bool) -> None:
        """Called after each case with the records and perturbed inputs made for it."""

    def model_for(self, case: BenchCase) -> nn.Module:
        """The model as `case` is fed to it: its `prepare` map first, where it has one."""
        return self.model if case.prepare is None else nn.Sequential(case.prepare, self.model)

    # ---- the shared loop -------------------------------------------------------------------
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
                pred = self.model_for(c)(c.x).argmax(1)
                out[c.name] = rec.dice_fields(pred, c.y, self.num_classes)
        return out

    def run(self, cases: list[BenchCase]) -> dict:
        """Evaluate every job on `cases`; returns the results document (on rank 0; {} on the others)."""
        self.out.path.mkdir(parents=True, exist_ok=True)
        provenance = {"config": asdict(self.config), "cases": sorted(c.name for c in cases), "weights": self.weights}
        records = self._load_previous(provenance)
        clean = self.clean(cases)  # all cases on every rank: tau needs the task's mean
        tau = success_threshold(c["dice"] for c in clean.values())
        first = min(c.name for c in cases)
        mine = cases[self.rank::self.world]
        done = {(r["case"], *self._key(r)) for r in records}
        jobs = self._jobs()
        bar = tqdm(total=len(mine) * len(jobs), desc=f"{self.kind} sweep", disable=not self.progress)
        for case in mine:
            outputs = []
            for job in jobs:
                if (case.name, *self._key(job)) not in done:
                    outputs.append(self._do(case, job, tau))
                    records.append(outputs[-1][0])
                    bar.set_postfix(case=case.name, **{k: v for k, v in job.items() if k != "id"})
                bar.update()
            self._after_case(case, outputs, case.name == first)
            self._write(records, clean, tau, provenance, final=False)  # after every case: resumable
        bar.close()
        self._write(records, clean, tau, provenance, final=True)
        if self.world > 1:
            wait_for_ranks()
            if self.rank != 0:
                return {}
            records = merged_records(self.out, self.world)
        summary = self._summarize(records, clean, tau)
        extra = {"summary": summary, "checks": self._checks(records, summary, tau, cases)}
        return self._write(records, clean, tau, provenance, final=True, shard=None, extra=extra)

    def _write(self, records, clean, tau, provenance, final: bool, shard=-1, extra: dict | None = None) -> dict:
        shard = self.shard if shard == -1 else shard
        doc = {"kind": self.kind, "config": asdict(self.config), **self._doc(), "num_classes": self.num_classes,
               "tau": tau, "clean": clean, "records": records, "complete": final, "meta": self.meta,
               "provenance": provenance, **(extra or {})}
        write_json(self.out.results(shard), doc)
        write_text(self.out.csv(shard), rec.to_csv(records, self.csv_columns))
        return doc
