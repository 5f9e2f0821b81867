"""Building blocks of ROG: swish, instance norm, separable convolution."""
from __future__ import annotations

import torch
from torch import nn

from rog.models.depthwise import CHANNELS_LAST, DepthwiseConv3d, cpu_fast_path
from rog.models.norm import InstanceNorm3d


def norm(channels: int) -> nn.InstanceNorm3d:
    """Affine instance norm (PyTorch's, unless the input is channels-last on the CPU)."""
    return InstanceNorm3d(channels)


class SepConv(nn.Sequential):
    """Depthwise 3x3x3 conv (stride `stride`, no bias) then pointwise 1x1x1 conv, no bias.

    `[B, in, D, H, W]` -> `[B, out, D/s, H/s, W/s]`. `fast=False` uses PyTorch's own depthwise
    convolution (the plain reference the benchmarks compare against); weights are identical.
    """

    def __init__(self, in_channels: int, out_channels: int, stride=1, fast: bool = True):
        depthwise = (DepthwiseConv3d(in_channels, stride) if fast else
                     nn.Conv3d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False))
        super().__init__(
            depthwise,
            nn.Conv3d(in_channels, out_channels, 1, bias=False),
        )
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        # a 1-channel input is both channels-last and contiguous, and the pointwise conv then
        # picks the default layout for its output; keep a fast model channels-last throughout
        if self.fast and cpu_fast_path(x) and x.is_contiguous(memory_format=CHANNELS_LAST):
            y = y.contiguous(memory_format=CHANNELS_LAST)
        return y
