"""The training loop, the same for every defence (`rog.train.defences`: clean, Free AT, PGD-AT,
artefact replays); resumable; single process or DDP.

Recipe (REFERENCE section 3): Dice (foreground, batch) + CE 1:1; Adam lr 1e-3, weight decay
1e-5, amsgrad; lr halved when the validation loss has not improved for `patience` epochs;
stop when lr <= lr0/16 or after `epochs`. Validation: one foreground-centred patch per
validation case of a seeded k-fold split. `checkpoint_last.pt` is written atomically after
every epoch (and every `save_every` iterations), `checkpoint_best.pt` when validation Dice
improves; `--resume` continues from the last one after a crash or kill -9.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from rog.atomic import write_json
from rog.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from rog.data.preprocess import check_preprocessed, labelled_cases
from rog.devices import init_distributed, resolve_device
from rog.errors import UsageError, parse_json, refuse_unknown_keys
from rog.evaluate.metrics import dice_batch
from rog.messages import log
from rog.models.registry import build_model
from rog.plan import Plan
from rog.progress import progress_bar
from rog.rundir import RunDir
from rog.train.adversarial import eps_scale
from rog.train.data import TrainPatches, holdout_size, make_splits, read_split, validation_patches
from rog.train.log import Curves, write_log
from rog.train.defences import Batch, defence_class
from rog.train.loss import DiceCE


@dataclass
class TrainConfig:
    epochs: int = 1000
    iterations: int | None = None  # per epoch; default: one patch per training case
    batch_size: int | None = None  # default: the plan's
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 50
    min_lr_factor: float = 1 / 16
    fold: int = 0
    folds: int = 5
    split: str | None = None  # a split file (train/val[/test] lists, or nnU-Net's splits_final.json), else seeded folds
    seed: int = 0
    model: str | None = None  # default: the plan's
    adv: str | None = None  # None, "free", "pgd", "artefact" or "noise" (what --noise alone sets)
    augment: str = "default"  # or "corruptions": also scanner artefacts (rog.corruptions) on half the patches
    eps: float = 8.0  # /255 of the whole case's channel range, as the benchmark
    replays: int = 5  # Free AT's m
    divide_epochs: bool = True  # Free AT: epochs / m, so the cost equals clean training
    pgd_steps: int = 5
    # adversarial runs (rog.train.adversarial, rog.train.loss, rog.train.selection)
    eps_warmup: float = 0.0  # fraction of the run's updates over which eps rises linearly to `eps`
    clean_weight: float = 0.0  # loss = w L(clean) + (1 - w) L(adversarial); 0: adversarial only
    trades: float = 0.0  # > 0: loss = L(clean) + trades * KL(p_clean || p_adversarial) instead
    select: str = "patch"  # checkpoint_best by "patch" (clean centred patches) or "robust" (whole volumes)
    select_iters: int = 3  # "robust": APGD-CE iterations at `eps`
    artefacts: list = field(default_factory=lambda: ["bias", "gamma", "blur", "noise", "motion"])  # --adv artefact
    artefact_severity: int = 5  # --adv artefact: severities drawn from 1..this
    noise: float = 0.0  # --adv noise: the noise sd on the range-normalised scale (rog certify's)
    init_from: str | None = None  # a run directory whose best weights start this run
    precision: str = "fp32"  # fp32, bf16 (CPU or CUDA) or fp16 (CUDA)
    device: str = "auto"
    workers: int = 0
    save_every: int = 0  # also checkpoint every N iterations (0: only at epoch ends)
    tensorboard: bool = False

    @classmethod
    def from_dict(cls, saved: dict, where: str = "the run's configuration", **override) -> "TrainConfig":
        """The config a run recorded (`where`: its file), with `override` (e.g. the
        device); an unknown key is refused, named, as in a plan."""
        refuse_unknown_keys({**saved, **override}, cls, where)
        return cls(**{**saved, **override})

    def __post_init__(self):
        if self.clean_weight and self.trades:
            raise UsageError("--clean-weight and --trades are two objectives: give one")
        if not 0 <= self.clean_weight < 1 or not 0 <= self.eps_warmup <= 1:
            raise UsageError("--clean-weight must be in [0, 1) and --eps-warmup in [0, 1]")
        if self.select not in ("patch", "robust"):
            raise UsageError(f"--select {self.select!r}: 'patch' or 'robust'")
        if self.noise and self.adv is None:
            self.adv = "noise"  # `--noise SIGMA` is the noise defence
        if self.noise and self.adv != "noise":
            raise UsageError(f"--noise is a defence of its own, not an option of --adv {self.adv}")
        defence_class(self.adv).check(self)


@dataclass
class _Epochs:
    """What every epoch of a run shares: the training patches and validation cases, the robust
    checkpoint selection (None: by clean patch Dice), the TensorBoard writer, the batch size on
    each rank and the batches of an epoch."""

    data: TrainPatches
    val: Any
    selection: Any
    writer: Any
    per_rank: int
    full: int


class Trainer:
    def __init__(self, plan: Plan, data_dir: str | Path, run_dir: str | Path, config: TrainConfig,
                 progress: bool = True):
        self.plan, self.config, self.progress = plan, config, progress
        self.data_dir, self.run = Path(data_dir), RunDir(run_dir)
        self.rank, self.world = init_distributed()
        self.device = resolve_device(config.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        torch.manual_seed(config.seed)
        self.model = build_model(plan, config.model or plan.model).to(self.device)
        if config.init_from:
            load_weights(self.model, RunDir(config.init_from).checkpoint("best"))
        self.net = DistributedDataParallel(self.model) if self.world > 1 else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                    amsgrad=True)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=0.5, patience=config.patience)
        self.loss_fn = DiceCE()
        self.defence = defence_class(config.adv)(config, self.model, plan.target_spacing)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.epoch, self.history, self.best_dice = 0, [], -1.0

    # ---- setup --------------------------------------------------------------------------
    def _splits(self) -> dict:
        if (split := self.run.read_splits()) is not None:  # resumed, or prepared in the run folder
            return split
        cases = labelled_cases(self.data_dir)
        if self.config.init_from:
            return self._inherited_split(cases)
        if self.config.split:
            split = read_split(self.config.split, self.config.fold, cases)
            if self.rank == 0:
                write_json(self.run.splits, {**split, "fold": self.config.fold, "from": str(self.config.split)})
            return split
        if len(cases) < 2:
            raise ValueError(f"{self.data_dir}: need at least 2 preprocessed labelled cases, found {len(cases)}")
        holdout = holdout_size(len(cases), len(labelled_cases(self.data_dir, "test")))
        folds = min(self.config.folds, len(cases) - holdout)
        split = make_splits(cases, folds, self.config.seed, holdout)[self.config.fold % folds]
        if self.rank == 0:
            write_json(self.run.splits, {**split, "fold": self.config.fold, "folds": folds, "seed": self.config.seed})
        return split

    def _inherited_split(self, cases: list[str]) -> dict:
        """The split of a run fine-tuned from `init_from`: the initial run's, so that no case
        that trained the initial weights is validated or held out here (another seed or fold
        would draw another split). A `--split` file is taken only where it keeps those cases in
        training; the split records where it came from."""
        initial_run = RunDir(self.config.init_from)
        initial = initial_run.read_splits()
        if initial is None:
            raise UsageError(f"{initial_run.splits}: missing: --init-from takes the initial run's split, and this "
                             "run has none (train it with rog, or give --split and no --init-from)")
        split, source = {k: initial[k] for k in ("train", "val", "test") if k in initial}, str(initial_run.path)
        if self.config.split:
            split, source = read_split(self.config.split, self.config.fold, cases), str(self.config.split)
            leaked = sorted(set(initial["train"]) & set(split["val"] + split.get("test", [])))
            if leaked:
                raise UsageError(f"--split {self.config.split}: {len(leaked)} case(s) that trained the --init-from "
                                 f"weights would be validated or held out ({', '.join(leaked[:3])}"
                                 f"{', ...' if len(leaked) > 3 else ''}); leave out --split to inherit its split")
        if self.rank == 0:
            write_json(self.run.splits, {**split, "fold": initial.get("fold", self.config.fold), "from": source,
                                         "init_from": str(initial_run.path)})
        return split

    def _autocast(self):
        if self.config.precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def max_epochs(self) -> int:
        return self.defence.epochs()

    # ---- checkpoints --------------------------------------------------------------------
    def _state(self, iteration: int, partial: dict | None = None) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": self.epoch, "iteration": iteration,
                "partial": partial or {}, "history": json.dumps(self.history), "best_dice": self.best_dice,
                "torch_rng": torch.get_rng_state(), **self.defence.state()}

    def _save(self, name: str, iteration: int = 0, partial: dict | None = None) -> None:
        if self.rank == 0:
            save_checkpoint(self.run.checkpoint(name), self._state(iteration, partial))

    def resume(self) -> tuple[int, dict]:
        state = load_checkpoint(self.run.checkpoint("last"), map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.best_dice = int(state["epoch"]), float(state["best_dice"])
        self.history = parse_json(state["history"], f"{self.run.checkpoint('last')}: history", CheckpointError)
        torch.set_rng_state(state["torch_rng"].cpu())  # patch sampling needs none: it is seeded per item
        self.defence.load_state(state, self.device)
        return int(state["iteration"]), state.get("partial") or {}

    # ---- loop ---------------------------------------------------------------------------
    def _train_step(self, x: torch.Tensor, y: torch.Tensor, x_clean: torch.Tensor | None = None) -> torch.Tensor:
        """One optimiser step on x `[B, C, ...]` (adversarial where `x_clean`, the same batch
        unperturbed, is given and the objective needs it); returns the loss."""
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.defence.objective(self.net, self.loss_fn, x, y, x_clean)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return loss.detach()

    def _validate(self, val) -> tuple[float, float]:
        self.model.eval()
        losses, dices = [], []
        with torch.no_grad(), self._autocast():
            for x, y in val:
                x, y = x[None].to(self.device), y[None].to(self.device)
                logits = self.model(x).float()
                losses.append(float(self.loss_fn(logits, y.unsqueeze(1))))
                dices.append(float(dice_batch(logits.argmax(1), y, self.plan.num_classes)[0]))
        self.model.train()
        return float(np.mean(losses)), float(np.mean(dices))

    def fit(self, resume: bool = False) -> dict:
        """Train (from the last checkpoint where `resume`) until the last epoch or the learning
        rate's floor; returns the epochs run, the best validation score and the last log row."""
        loop, start_it, partial = self._prepare(resume)
        # one bar for the whole run, so its ETA is the run's (up to the last epoch: the learning
        # rate schedule may end it sooner)
        bar = progress_bar(total=max(self.max_epochs - self.epoch, 0) * loop.full - start_it, desc="train",
                           unit="batch", disable=not self.progress or self.rank)
        floor = self.config.lr * self.config.min_lr_factor + 1e-12
        if self.max_epochs != self.config.epochs and self.rank == 0:
            log.info(f"{self.config.epochs} epoch(s) divided by the {self.config.replays} replays of each batch "
                     f"(Free AT's rule: the cost of clean training): {self.max_epochs} epoch(s); "
                     "--no-divide-epochs keeps them all")
        self._curves = Curves(self.run)
        while self.epoch < self.max_epochs and self.opt.param_groups[0]["lr"] > floor:
            t0 = time.perf_counter()
            sums, scale = self._epoch(loop, start_it, partial, bar)
            start_it, partial = 0, {}
            self._end_epoch(loop, sums, scale, time.perf_counter() - t0)
        bar.close()
        if self.rank == 0:
            self._curves.draw(self.history, final=True)
            if self.history and max(row["val_dice"] for row in self.history) == 0:
                # a seed that never leaves the background at a short budget (DynUNet, one seed in six
                # of the demo's): its attack figures would measure a failed training, not robustness
                log.warning(f"{self.run.path}: validation Dice 0 in all {len(self.history)} epoch(s): the model "
                            "never predicted the foreground; a failed training (train longer, or another --lr or "
                            "--seed)")
        if self.world > 1:
            dist.barrier()
        return {"epochs": self.epoch, "best_val_dice": self.best_dice,
                "last": self.history[-1] if self.history else None}

    def _prepare(self, resume: bool) -> tuple[_Epochs, int, dict]:
        """Write the run's plan and config, resume its state where asked, and build what its
        epochs share; returns it with the iteration and partial sums to resume from."""
        cfg = self.config
        self.run.path.mkdir(parents=True, exist_ok=True)
        split = self._splits()
        check_preprocessed(self.data_dir, split["train"] + split["val"], self.plan, str(self.run.plan))
        if self.rank == 0:
            self.plan.save(self.run.plan)
            write_json(self.run.config, {**asdict(cfg), "model": cfg.model or self.plan.model})
        start_it, partial = self.resume() if resume else (0, {})
        batch = cfg.batch_size or self.plan.batch_size
        iters = cfg.iterations or max(1, math.ceil(len(split["train"]) / batch))
        data = TrainPatches(self.data_dir, split["train"], self.plan.crop_size, self.plan.patch_size,
                            iters * batch, cfg.seed, rank=self.rank, world=self.world,
                            corruption_spacing=self.plan.target_spacing if cfg.augment == "corruptions" else None,
                            ignore_label=self.plan.ignore_label)
        val = validation_patches(self.data_dir, split["val"], self.plan.patch_size)
        selection, writer = self._selection(split["val"]), self._tensorboard()
        per_rank = max(batch // self.world, 1)
        return _Epochs(data, val, selection, writer, per_rank, math.ceil(len(data) / per_rank)), start_it, partial

    def _selection(self, cases: list[str]):
        """The robust checkpoint selection on the validation `cases` (None: by clean patch Dice)."""
        if self.config.select != "robust":
            return None
        from rog.train.selection import RobustSelection  # the benchmark's machinery, only here
        selection = RobustSelection(self.data_dir, cases, self.plan, self.config.eps, self.config.select_iters,
                                    self.device)
        if self.rank == 0:
            log.info(selection.rule())
        return selection

    def _epoch(self, loop: _Epochs, start_it: int, partial: dict, bar) -> tuple[dict, float]:
        """Train one epoch from iteration `start_it` (a resumed one: the batches before it are
        skipped unloaded, `partial` holds their loss sums); returns the loss sums and the eps
        scale of its last batch."""
        cfg = self.config
        loop.data.set_epoch(self.epoch)
        loader = DataLoader(Subset(loop.data, range(start_it * loop.per_rank, len(loop.data))),
                            batch_size=loop.per_rank, num_workers=cfg.workers)
        sums = {"loss": partial.get("loss", 0.0), "n": partial.get("n", 0)}
        total = self.max_epochs * loop.full
        # the epoch's log row names its eps scale even when a resumed epoch has no batch left
        scale = eps_scale(self.epoch * loop.full + start_it, total, cfg.eps_warmup)
        for it, (x, y, span) in enumerate(loader, start=start_it):
            scale = eps_scale(self.epoch * loop.full + it, total, cfg.eps_warmup)
            # a fresh draw per batch (PGD's random start, the artefact), reproducible on resume
            seed = int(np.random.SeedSequence([cfg.seed, self.epoch, it]).generate_state(1)[0])
            batch = Batch(x.to(self.device), y.to(self.device), span[:, 0].to(self.device),
                          span[:, 1].to(self.device), seed, scale)
            loss = self.defence.step(batch, self._train_step)
            if not math.isfinite(loss):
                raise FloatingPointError(f"epoch {self.epoch + 1}: training loss became {loss}; "
                                         f"last good checkpoint: {self.run.checkpoint('last')}")
            sums["loss"] += loss
            sums["n"] += 1
            bar.update()
            bar.set_postfix(epoch=f"{self.epoch + 1}/{self.max_epochs}", loss=f"{sums['loss'] / sums['n']:.4f}",
                            lr=f"{self.opt.param_groups[0]['lr']:.2e}")
            if cfg.save_every and (it + 1) % cfg.save_every == 0:
                self._save("last", it + 1, sums)
        return sums, scale

    def _end_epoch(self, loop: _Epochs, sums: dict, scale: float, seconds: float) -> None:
        """Validate, step the schedule, log the epoch and write the checkpoints."""
        val_loss, val_dice = self._validate(loop.val)
        self.sched.step(val_loss)
        self.epoch += 1
        row = {"epoch": self.epoch, "train_loss": sums["loss"] / max(sums["n"], 1), "val_loss": val_loss,
               "val_dice": val_dice, "lr": self.opt.param_groups[0]["lr"], "seconds": seconds,
               **self.defence.log_row(scale)}
        score = val_dice
        if loop.selection is not None:
            row["val_whole_dice"], row["val_robust_dice"] = loop.selection(self.model)
            score = row["selection_score"] = (row["val_whole_dice"] + row["val_robust_dice"]) / 2
        self.history.append(row)
        best = score > self.best_dice
        if best:
            self.best_dice = score
            self._save("best")
        if self.rank == 0:  # nnU-Net's habit: one line per epoch
            log.info(f"epoch {self.epoch}/{self.max_epochs}: train loss {row['train_loss']:.4f}, validation loss "
                     f"{val_loss:.4f}, Dice {val_dice:.4f}"
                     + (f", whole-volume clean / attacked Dice {row['val_whole_dice']:.4f} / "
                        f"{row['val_robust_dice']:.4f}" if loop.selection is not None else "")
                     + (" (best: saved)" if best else ""))
        self._save("last")
        if self.rank == 0:
            write_log(self.run, self.history)
            self._curves.draw(self.history)
            if loop.writer:
                for k in ("train_loss", "val_loss", "val_dice", "lr"):
                    loop.writer.add_scalar(k, row[k], self.epoch)

    def _tensorboard(self):
        if not self.config.tensorboard or self.rank:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: `pip install tensorboard` to log there; continuing")
            return None
        return SummaryWriter(str(self.run.tensorboard))
