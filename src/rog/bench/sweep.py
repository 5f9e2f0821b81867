"""What the attack benchmark and the corruption sweep share: a model evaluated on cases x
jobs, clean Dice and tau first, records written after every job (so a killed run resumes,
losing at most the job it was in),
a results folder continued only under the same provenance, torchrun sharding, and a summary
with validity checks at the end. Subclasses say what a job is and how it is measured."""
from __future__ import annotations

import time
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import torch
from torch import nn

from rog.atomic import write_text
from rog.attacks.base import frozen
from rog.bench import records as rec
from rog.bench.cases import BenchCase, Fixed
from rog.bench.sharding import merged_records, rank_and_world, wait_for_ranks
from rog.evaluate.robustness import success_threshold
from rog.infer.sliding_window import tile
from rog.messages import log
from rog.progress import progress_bar
from rog.results import CSV_COLUMNS, Check, Meta, Provenance, Results, Score
from rog.rundir import ResultsDir


class Sweep:
    """`kind` names the results ("attack" or "corruption"); subclasses implement `_jobs`,
    `_key`, `_do`, `_summarize`, `_checks` and may extend `_complete` and `_after_case`."""

    kind = ""

    def __init__(self, model: nn.Module, num_classes: int, config, out_dir: str | Path, patch=None,
                 progress: bool = True, meta: Meta | None = None, weights: str | None = None,
                 volume: bool = False, window: dict | None = None, keep=None, spacing=None):
        """`meta` (stored as is) describes the model for the report: label, run, data, model
        summary, class names, where the cases come from. `weights` identifies the model's
        weights (a checkpoint hash): a results folder is only ever continued with the same.
        `volume`: whole cases through the sliding window (patch size `patch`; `window`: more
        `SlidingWindow` options, such as an external tool's mirroring and tiling style).
        `keep`: a `rog.bench.volumes.VolumeWriter` that writes the perturbed whole cases as
        images (`--save-volumes`), or None. `spacing`: mm per voxel axis of the model input (the
        plan's target spacing; None: unknown, or each case's own, `spacing_of`)."""
        self.config, self.num_classes, self.progress, self.keep = config, num_classes, progress, keep
        self.spacing = None if spacing is None else [float(v) for v in spacing]
        self.meta, self.weights = meta or Meta(), weights
        # a user's model without a window takes whole cases as they are (`rog.external.raw`)
        self.model = tile(model, patch, **(window or {})) if volume and patch else model
        self.patch = patch
        self.out = ResultsDir(out_dir)
        self.rank, self.world = rank_and_world()
        self.shard = self.rank if self.world > 1 else None

    def spacing_of(self, case: BenchCase) -> list[float] | None:
        """mm per voxel axis of `case.x`: the case's own (a scan as stored), else the sweep's."""
        return self.spacing if case.spacing is None else case.spacing

    # ---- what subclasses define ------------------------------------------------------------
    def _jobs(self) -> list:
        """The jobs of one case: small frozen dataclasses whose fields name them, with
        `cost(num_classes)`, the forward passes they are expected to take."""
        raise NotImplementedError

    def _key(self, record_or_job) -> tuple:
        raise NotImplementedError

    def _do(self, case: BenchCase, job, tau: float) -> tuple[object, torch.Tensor | None]:
        """(record, perturbed input or None) of `job` on `case`."""
        raise NotImplementedError

    def _summarize(self, records: list, clean: dict[str, Score], tau: float):
        raise NotImplementedError

    def _checks(self, records: list, summary, tau: float, cases: list[BenchCase]) -> list[Check]:
        raise NotImplementedError

    def _complete(self, results: Results) -> None:
        """Add what only this kind records to the document before it is written."""

    def _after_case(self, case: BenchCase, outputs: list[tuple[object, torch.Tensor | None]], first: bool,
                    earlier: list, tau: float) -> None:
        """Called after each case with the records and perturbed inputs made for it, and the
        records of its jobs that an earlier, interrupted run finished (`earlier`: their inputs
        are not kept; `_do` at `tau` remakes one, the jobs being deterministic under the seed)."""

    def _input_of(self, case: BenchCase, record, x: torch.Tensor | None, tau: float) -> torch.Tensor:
        """The perturbed input of `record`: `x`, or for a record an earlier run finished, its job
        run again (`_after_case`)."""
        if x is not None:
            return x
        job = next(j for j in self._jobs() if self._key(j) == self._key(record))
        return self._do(case, job, tau)[1]

    def model_for(self, case: BenchCase) -> nn.Module:
        """The model as `case` is fed to it: inside the case's deployed pipeline where it has one,
        its `fixed` voxels held at their values."""
        model = self.model if case.around is None else case.around(self.model)
        return model if case.fixed is None else Fixed(model, case.x, case.fixed)

    # ---- the shared loop -------------------------------------------------------------------
    def _load_previous(self, provenance: Provenance) -> list:
        if not self.out.results(self.shard).is_file():
            return []
        prev = self.out.read(self.shard)
        # a field added to the configuration since the folder was written is the folder's at its
        # default (`eps_unit` "range"): older results resume under the configuration they ran
        if prev.provenance.config is not None:
            defaults = {f.name: f.default for f in fields(self.config) if f.default is not MISSING}
            prev.provenance.config = {**{k: v for k, v in defaults.items() if k in provenance.config},
                                      **prev.provenance.config}
        why = prev.provenance.mismatch(provenance)
        if why:
            raise rec.BenchError(f"{self.out.results(self.shard)}: {why}; use another output folder or delete it")
        return prev.records

    def clean(self, cases: list[BenchCase]) -> dict[str, Score]:
        """Clean Dice per case; `self.forward_seconds` keeps each case's pass, the unit of the
        sweep's cost estimate."""
        out, self.forward_seconds = {}, {}
        with frozen(self.model), torch.no_grad():
            for c in cases:
                t0 = time.perf_counter()
                pred = self.model_for(c)(c.x).argmax(1)
                self.forward_seconds[c.name] = time.perf_counter() - t0
                out[c.name] = rec.dice_score(pred, c.y, self.num_classes)
        return out

    def run(self, cases: list[BenchCase]) -> Results | None:
        """Evaluate every job on `cases`; returns the results (on rank 0; None on the others)."""
        self.out.path.mkdir(parents=True, exist_ok=True)
        provenance = Provenance(asdict(self.config), sorted(c.name for c in cases), self.weights,
                                self.meta.model.model if self.meta.model else None, self.meta.deployment)
        records = self._load_previous(provenance)
        clean = self.clean(cases)  # all cases on every rank: tau needs the task's mean
        tau = success_threshold(c.dice for c in clean.values())
        first = min(c.name for c in cases)
        mine = cases[self.rank::self.world]
        done = {(r.case, *self._key(r)) for r in records}
        jobs = self._jobs()
        # the bar counts expected forward passes, so its ETA weighs a 500-query Square or a
        # 9-target APGD-T as what they cost, not as one job each
        cost = {job: job.cost(self.num_classes) for job in jobs}
        todo = sum(cost[job] for case in mine for job in jobs if (case.name, *self._key(job)) not in done)
        self._announce(mine, sum(cost.values()), todo)
        # the bar counts only the work still to do: a resumed run's ETA is not its skipped jobs'
        bar = progress_bar(total=todo, desc=f"{self.kind} sweep", disable=not self.progress, unit="fwd")
        def document(complete: bool) -> Results:
            return Results(self.kind, asdict(self.config), self.num_classes, tau, clean, records, complete, self.meta,
                           provenance)

        for case in mine:
            pending = [job for job in jobs if (case.name, *self._key(job)) not in done]
            if not pending:  # finished by an earlier run, its panels and volumes with it
                continue
            earlier = [r for r in records if r.case == case.name]
            outputs = []
            for job in pending:
                outputs.append(self._do(case, job, tau))
                records.append(outputs[-1][0])
                log.debug(f"{case.name} {' '.join(f'{k}={v}' for k, v in asdict(job).items())}: Dice "
                          f"{records[-1].dice}, {records[-1].seconds or 0:.1f} s")
                bar.set_postfix(case=case.name, **asdict(job))
                bar.update(cost[job])
                # after every job but the case's last, which waits for its panels and volumes:
                # a killed run loses at most one job, and a case whose every job is recorded
                # has its panels written
                if job is not pending[-1]:
                    self._write(document(False), self.shard)
            self._after_case(case, outputs, case.name == first, earlier, tau)
            self._write(document(False), self.shard)
        bar.close()
        results = document(True)
        self._write(results, self.shard)
        if self.world > 1:
            wait_for_ranks()
            if self.rank != 0:
                return None
            results.records = merged_records(self.out, self.world)
        results.summary = self._summarize(results.records, clean, tau)
        results.checks = self._checks(results.records, results.summary, tau, cases)
        self._write(results, None)
        return results

    def _announce(self, mine: list[BenchCase], per_case: int, todo: int) -> None:
        """Say before the sweep starts what it will cost: forward-pass equivalents per case (a
        gradient step counts 3) and still to run, and the seconds that makes at the first
        case's measured clean pass."""
        if not mine:
            return
        first = self.forward_seconds[mine[0].name]
        log.info(f"{self.kind} sweep: {per_case} forward-pass equivalents per case, {todo} to run over "
                 f"{len(mine)} case(s): about {todo * first:.0f} s at {first:.3f} s per pass (the first case's "
                 "clean one)")

    def _write(self, results: Results, shard: int | None) -> None:
        self._complete(results)
        self.out.write(results, shard)
        write_text(self.out.csv(shard), rec.to_csv(results.records, CSV_COLUMNS[self.kind]))


class WholeCaseSweep(Sweep):
    """A sweep that perturbs whole cases (`spacing` mm per voxel axis: the plan's target
    spacing, or each case's own where a case is a scan as stored) and runs them through the
    sliding window: the corruption and the worst-case artefact sweeps."""

    def __init__(self, model: nn.Module, num_classes: int, config, out_dir: str | Path, patch, spacing,
                 progress: bool = True, meta: Meta | None = None, weights: str | None = None,
                 window: dict | None = None, keep=None):
        super().__init__(model, num_classes, config, out_dir, patch, progress, meta, weights, volume=True,
                         window=window, keep=keep, spacing=spacing)

    def _scored(self, case: BenchCase, x: torch.Tensor) -> tuple[torch.Tensor, Score]:
        """(logits `[1, K, ...]`, Dice against `case.y`) of the perturbed case `x` `[1, C, ...]`
        through the model as the case is fed to it."""
        with frozen(self.model), torch.no_grad():
            logits = self.model_for(case)(x)
        return logits, rec.dice_score(logits.argmax(1), case.y, self.num_classes)

    def _keep_input(self, case: BenchCase, tag: str, x: torch.Tensor, logits: torch.Tensor) -> None:
        """With `--save-volumes`, write the perturbed case `x` and its `logits` as `tag` (and the
        clean case once)."""
        if self.keep is None:
            return
        x = case.held(x)  # the input as the model saw it (`Fixed`)
        with frozen(self.model), torch.no_grad():
            if not self.keep.has_clean(case.name):
                self.keep.write(case.name, "clean", case.x, self.model_for(case)(case.x))
            self.keep.write(case.name, tag, x, logits)
