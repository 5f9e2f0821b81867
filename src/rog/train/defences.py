"""What training does with each batch, one class per defence, chosen by `--adv`'s name in
`DEFENCES`: clean training, Free AT, PGD-AT, Free-style replays against worst-case scanner
artefacts (the steps themselves are `rog.train.adversarial`'s) and Gaussian noise for
randomized smoothing. The loss options of an
adversarial defence, the clean/adversarial mix and TRADES, are its `objective`. The trainer
calls a defence and does nothing else per kind; a new defence is a class here and its name in
`DEFENCES`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from rog.errors import UsageError
from rog.train.adversarial import ArtefactAT, FreeAT, pgd_examples, trades_examples
from rog.train.loss import adversarial_loss

# (x_in, y, x_clean) -> the loss after one optimiser step on x_in (x_clean: the same batch
# unperturbed, for the objectives that need it; None for clean training)
TrainStep = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class Batch:
    """One training batch: patches x `[B, C, ...]`, labels y `[B, ...]`, the range of each
    patch's case `lo`, `hi` (`[B, C]`), a seed for the batch's random draws (the same on a
    resumed run) and the fraction of eps in use (`eps_scale`'s warm-up)."""

    x: torch.Tensor
    y: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    seed: int
    scale: float


class Clean:
    """Clean training: one optimiser step per batch on the batch as sampled. `config` is the
    run's `TrainConfig`, `model` the network the attacks see (not DDP's wrapper), `spacing`
    the plan's target spacing in mm."""

    title: ClassVar[str] = "training"
    replayed: ClassVar[bool] = False  # each batch replayed config.replays times (Free-style)
    warmup: ClassVar[bool] = False  # eps rises over --eps-warmup (the log's eps_scale)

    def __init__(self, config, model: nn.Module, spacing):
        self.config = config

    @staticmethod
    def check(config) -> None:
        """Refuse options this defence does not take (`config`: a `TrainConfig` being built)."""
        if config.eps_warmup or config.clean_weight or config.trades or config.select != "patch":
            raise UsageError("--eps-warmup, --clean-weight, --trades and --select robust need --adv")

    def epochs(self) -> int:
        """Epochs of the run: `config.epochs`, divided by the replays where each batch is replayed
        and `divide_epochs` keeps the cost that of clean training."""
        cfg = self.config
        return max(1, math.ceil(cfg.epochs / cfg.replays)) if self.replayed and cfg.divide_epochs else cfg.epochs

    def step(self, batch: Batch, train_step: TrainStep) -> float:
        """Train on `batch` through `train_step`; returns the batch's mean loss."""
        return float(train_step(batch.x, batch.y, None))

    def objective(self, net: nn.Module, loss_fn, x_in: torch.Tensor, y: torch.Tensor,
                  x_clean: torch.Tensor | None) -> torch.Tensor:
        """The loss of `net` on x_in `[B, C, ...]`, y `[B, ...]`: the mix or TRADES with the
        clean batch `x_clean` where the config asks for one, else `loss_fn` on x_in."""
        cfg = self.config
        if x_clean is not None and (cfg.clean_weight or cfg.trades):
            # one forward pass over both halves: the normalisation is per instance
            clean, adv = net(torch.cat([x_clean, x_in])).chunk(2)
            return adversarial_loss(loss_fn, clean, adv, y.unsqueeze(1), cfg.clean_weight, cfg.trades)
        return loss_fn(net(x_in), y.unsqueeze(1))

    def state(self) -> dict:
        """What a checkpoint keeps of the defence, so a resumed run continues bit for bit."""
        return {}

    def load_state(self, state: dict, device) -> None:
        """Restore `state` (a checkpoint's dict) onto `device`."""

    def log_row(self, scale: float) -> dict:
        """The log.csv columns of the defence for an epoch that ended at eps fraction `scale`."""
        return {"adv_ratio": "", "eps_scale": scale if self.warmup else ""}


class Free(Clean):
    """Free AT: each batch replayed `replays` times, a signed-gradient step of the persistent
    perturbation per replay (`FreeAT`); with TRADES the buffer starts at TRADES's random start."""

    title = "Free AT"
    replayed = True
    warmup = True

    def __init__(self, config, model, spacing):
        super().__init__(config, model, spacing)
        self.free = FreeAT(config.eps, config.replays, random_start=config.trades > 0)

    @staticmethod
    def check(config) -> None:
        pass

    def step(self, batch, train_step):
        return self.free.step(batch.x, batch.y, batch.lo, batch.hi, lambda x_in, y: train_step(x_in, y, batch.x),
                              batch.scale, batch.seed)

    def state(self):
        return {"free_delta": self.free.delta}

    def load_state(self, state, device):
        if state.get("free_delta") is not None:
            self.free.delta = state["free_delta"].to(device)

    def log_row(self, scale):
        return {**super().log_row(scale), "adv_ratio": self.free.last_ratio}


class PGDAT(Clean):
    """PGD-AT: one optimiser step per batch on the benchmark's PGD examples (`pgd_examples`), or
    with TRADES on examples that maximise TRADES's KL (`trades_examples`)."""

    title = "PGD-AT"
    warmup = True

    def __init__(self, config, model, spacing):
        super().__init__(config, model, spacing)
        self.model = model

    @staticmethod
    def check(config) -> None:
        pass

    def step(self, batch, train_step):
        cfg = self.config
        examples = trades_examples if cfg.trades else pgd_examples
        x_adv = examples(self.model, batch.x, batch.y, batch.lo, batch.hi, cfg.eps * batch.scale, cfg.pgd_steps,
                         batch.seed)
        return float(train_step(x_adv, batch.y, batch.x))


class ArtefactReplays(Clean):
    """Free-style replays against worst-case scanner artefacts (`ArtefactAT`): one artefact per
    batch, its parameters stepped along their gradient's sign per replay."""

    title = "artefact-adversarial"
    replayed = True

    def __init__(self, config, model, spacing):
        super().__init__(config, model, spacing)
        self.artefact = ArtefactAT(config.artefacts, config.artefact_severity, config.replays, spacing)

    @staticmethod
    def check(config) -> None:
        from rog.artefacts import expand
        try:
            config.artefacts = expand(list(config.artefacts))
        except ValueError as e:
            raise UsageError(f"--artefacts: {e}") from e
        if not 1 <= config.artefact_severity <= 5 or config.eps_warmup:
            raise UsageError("--adv artefact: --artefact-severity must be 1 to 5, and --eps-warmup does not apply")

    def step(self, batch, train_step):
        return self.artefact.step(batch.x, batch.y, batch.lo, batch.hi, lambda x_in, y: train_step(x_in, y, batch.x),
                                  batch.seed)


class GaussianNoise(Clean):
    """Gaussian noise augmentation (Cohen et al. 2019), the training randomized smoothing asks
    for: each batch once, with noise of sd `config.noise` times each patch's case range (the
    scale `rog certify` smooths on), drawn from the batch's seed."""

    title = "Gaussian noise"

    @staticmethod
    def check(config) -> None:
        if config.noise <= 0:
            raise UsageError(f"--adv noise: --noise {config.noise}: the noise sd must be > 0")
        if config.eps_warmup or config.clean_weight or config.trades or config.select != "patch":
            raise UsageError("--eps-warmup, --clean-weight, --trades and --select robust do not apply to --noise")

    def step(self, batch, train_step):
        g = torch.Generator(device=batch.x.device).manual_seed(batch.seed)
        noise = torch.randn(batch.x.shape, generator=g, device=batch.x.device, dtype=batch.x.dtype)
        span = (batch.hi - batch.lo).view(*batch.hi.shape, *[1] * (batch.x.ndim - 2))
        return float(train_step(batch.x + self.config.noise * span * noise, batch.y, batch.x))


DEFENCES = {None: Clean, "free": Free, "pgd": PGDAT, "artefact": ArtefactReplays, "noise": GaussianNoise}


def defence_class(name: str | None) -> type[Clean]:
    """The defence named `name` (`--adv`; None: clean training)."""
    if name not in DEFENCES:
        raise UsageError(f"--adv {name!r}: one of {', '.join(k for k in DEFENCES if k)} (or none: clean training)")
    return DEFENCES[name]
