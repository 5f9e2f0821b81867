"""Model registry: build any segmentation network from a Plan.

Every model maps `[B, C_in, D, H, W]` to logits `[B, K, D, H, W]` (DESIGN.md contract).
Names: `rog` (the lattice), `dynunet` (MONAI's DynUNet configured the nnU-Net way: the
paper's comparison model; at the default width 64 its filters are nnU-Net's 32 * 2**i capped
at 320, and they scale with the plan's width like ROG's), or a user factory given as `package.module:factory`, called as
`factory(plan)` and returning an `nn.Module`.
"""
from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from rog.errors import RogError
from rog.plan import Plan

_REGISTRY: dict[str, Callable[[Plan], nn.Module]] = {}


def register_model(name: str):
    def deco(fn: Callable[[Plan], nn.Module]):
        _REGISTRY[name] = fn
        return fn
    return deco


def available_models() -> list[str]:
    return sorted(_REGISTRY)


class ModelError(RogError, ValueError):
    """A model name or factory that gives no model; the message names it."""


def build_model(plan: Plan, name: str | None = None) -> nn.Module:
    """Build a model for `plan`'s channels, classes and strides.

    Args:
        plan: the task's `Plan` (its `width` sizes every registered model).
        name: "rog", "dynunet" or "package.module:factory" (a callable taking the plan);
            default `plan.model`.

    Returns:
        An `nn.Module` mapping `[B, C, D, H, W]` to logits `[B, K, D, H, W]`.
    """
    name = name or plan.model
    if name in _REGISTRY:
        return _REGISTRY[name](plan)
    if ":" in name:
        return factory_model(name, plan)
    raise ModelError(f"--model {name}: unknown model; registered: {available_models()} or 'package.module:factory'")


def factory_model(spec: str, *args) -> nn.Module:
    """The model of the factory `spec` ("package.module:factory") called with `args` (a plan
    for rog's grid, none for a model on the scans as stored); an import that fails or a result
    that is no `nn.Module` is a `ModelError` naming `spec`."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ModelError(f"--model {spec}: give a factory as package.module:factory")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"--model {spec}: cannot import the factory ({e})") from e
    model = factory(*args)
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_model("rog")
def _rog(plan: Plan) -> nn.Module:
    from rog.models.rog import ROG
    return ROG(plan.num_channels, plan.num_classes, plan.strides, width=plan.width,
               num_scales=plan.num_scales, length=plan.lattice_length)


def dynunet_stages(plan: Plan) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net-style (kernels, strides) per stage from the plan's downsampling schedule:
    a full-resolution stage, then one stage per non-trivial stride position of the plan
    (s0, s1, s2, and the lattice's two fixed halvings). As nnU-Net, the kernel is 1 on an axis
    whose spacing at that stage is at least twice the finest one (no mixing across thick slices)."""
    extra = [[2, 2, 2]] * (plan.num_scales - 2)
    positions = [s for s in list(plan.strides) + extra if any(v != 1 for v in s)]
    strides = [[1, 1, 1]] + [list(s) for s in positions]
    kernels, spacing = [], list(plan.target_spacing)
    for s in strides:
        spacing = [sp * v for sp, v in zip(spacing, s)]
        kernels.append([1 if sp >= 2 * min(spacing) else 3 for sp in spacing])
    return kernels, strides


@register_model("dynunet")
def _dynunet(plan: Plan) -> nn.Module:
    from monai.networks.nets import DynUNet
    kernels, strides = dynunet_stages(plan)
    base = max(plan.width // 2, 1)  # the plan's width 64 (paper) gives nnU-Net's 32 base filters
    filters = [min(base * 2 ** i, 10 * base) for i in range(len(strides))]
    return DynUNet(spatial_dims=3, in_channels=plan.num_channels, out_channels=plan.num_classes,
                   kernel_size=kernels, strides=strides, upsample_kernel_size=strides[1:],
                   filters=filters, norm_name=("INSTANCE", {"affine": True}),
                   act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
                   deep_supervision=False, res_block=False)
