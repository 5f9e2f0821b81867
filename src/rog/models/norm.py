"""Instance normalisation that stays in channels-last 3D layout on the CPU.

PyTorch's instance norm views `[B, C, D, H, W]` as `[1, B*C, D, H, W]`, which a channels-last
tensor cannot be without a copy in each direction (both passes). Here each sample's
channels-last data is viewed as `[D*H*W, C]` rows and normalised with PyTorch's batch-norm
kernels (per-channel statistics over the rows = instance statistics), written in place into
the output; forward and backward then cost what the default-layout instance norm costs.
"""
from __future__ import annotations

import torch
from torch import nn

from rog.models.depthwise import CHANNELS_LAST, cpu_fast_path, layout_of

_aten = torch.ops.aten


def _rows(x: torch.Tensor) -> torch.Tensor:
    """Channels-last `[B, C, D, H, W]` -> its `[B, D*H*W, C]` view (no copy)."""
    return x.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1, x.shape[1])


class _InstanceNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        b, c = x.shape[:2]
        y = torch.empty_like(x, memory_format=CHANNELS_LAST)
        mean, invstd = x.new_empty(b, c), x.new_empty(b, c)
        for i, (xi, yi) in enumerate(zip(_rows(x), _rows(y))):
            _aten.native_batch_norm.out(xi, weight, bias, None, None, True, 0.0, eps,
                                        out=yi, save_mean=mean[i], save_invstd=invstd[i])
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mean, invstd = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=CHANNELS_LAST)
        gx = torch.empty_like(x, memory_format=CHANNELS_LAST)
        gw, gb = x.new_empty(mean.shape), x.new_empty(mean.shape)
        for i, (gyi, xi, gxi) in enumerate(zip(_rows(grad_y), _rows(x), _rows(gx))):
            _aten.native_batch_norm_backward.out(gyi, xi, weight, None, None, mean[i], invstd[i], True,
                                                 ctx.eps, [True, True, True], out0=gxi, out1=gw[i], out2=gb[i])
        return gx, gw.sum(0), gb.sum(0), None


class InstanceNorm3d(nn.InstanceNorm3d):
    """`nn.InstanceNorm3d(C, affine=True)` (same state-dict keys) that keeps a channels-last
    fp32 CPU input channels-last: `[B, C, D, H, W]` -> same shape and layout."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_fast_path(x) and layout_of(x) == CHANNELS_LAST:
            return _InstanceNormFn.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)
