"""Parameter and FLOP counts (FLOPs from `torch.utils.flop_counter`, one forward, batch 1)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rog.models.registry import available_models, build_model, count_parameters
from rog.plan import Plan
from rog.results import ModelInfo


def gflops(model: nn.Module, input_shape) -> float:
    """GFLOPs (2 x multiply-adds) of one forward pass on a `[1, *input_shape]` zero tensor."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def row(model: nn.Module, name: str, channels: int, size) -> ModelInfo:
    """Name, parameters and GFLOPs of `model` on a `[1, channels, *size]` input; of an
    `nn.ModuleList` (an ensemble of folds), the sums over its members."""
    size = [int(v) for v in size]
    members = list(model) if isinstance(model, nn.ModuleList) else [model]
    return ModelInfo(name, sum(count_parameters(m) for m in members),
                     sum(gflops(m, [channels, *size]) for m in members), size)


def model_row(model: nn.Module, plan: Plan, name: str, input_size=None) -> ModelInfo:
    """`row` of `model` at `input_size` (default: the plan's val patch)."""
    return row(model, name, plan.num_channels, input_size or plan.val_patch_size)


def summarize(plan: Plan, input_size=None, models=None) -> list[ModelInfo]:
    """One `model_row` per registered model (or the names in `models`)."""
    return [model_row(build_model(plan, name), plan, name, input_size) for name in models or available_models()]
