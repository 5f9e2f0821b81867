"""Building blocks of ROG: swish, instance norm, separable convolution."""
from __future__ import annotations

from torch import nn

from rog.models.depthwise import DepthwiseConv3d


def norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True)


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
