"""Building blocks of ROG: swish, instance norm, separable convolution."""
from __future__ import annotations

from torch import nn


def norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True)


class SepConv(nn.Sequential):
    """Depthwise 3x3x3 conv (stride `stride`, no bias) then pointwise 1x1x1 conv, no bias.

    `[B, in, D, H, W]` -> `[B, out, D/s, H/s, W/s]`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride=1):
        super().__init__(
            nn.Conv3d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
            nn.Conv3d(in_channels, out_channels, 1, bias=False),
        )
