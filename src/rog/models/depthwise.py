"""Depthwise 3x3x3 convolution with a fast CPU backward.

PyTorch's CPU backward of a depthwise 3D convolution is about 10x slower than its forward
(REFERENCE section 1: 0.5 s vs 0.04 s for a 2x64x32x48x32 tensor), and it dominates ROG's
training step and every gradient-based attack. Here, on CPU:
- forward: PyTorch's convolution in channels-last 3D layout (oneDNN's fast depthwise kernel);
- input gradient: the same fast forward kernel applied to the output gradient with the kernel
  flipped (after inserting zeros between output voxels when strided);
- weight gradient: a depthwise convolution over the (batch, channel) planes that correlates
  the input with the output gradient (the stride becomes a dilation), summed over the batch.
On CUDA, cuDNN's own backward is already fast, so PyTorch's implementation is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CL = torch.channels_last_3d


def _input_grad(grad_out: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int, int],
                in_shape: torch.Size) -> torch.Tensor:
    """Gradient w.r.t. the input `[B, C, D, H, W]` of a padding-1 depthwise conv."""
    c = weight.shape[0]
    if any(s > 1 for s in stride):
        b, _, *out = grad_out.shape
        dilated = grad_out.new_zeros((b, c, *[(o - 1) * s + 1 for o, s in zip(out, stride)]))
        dilated[:, :, ::stride[0], ::stride[1], ::stride[2]] = grad_out
        # an even input size leaves one more input voxel than the dilated grid covers
        extra = [n - d for n, d in zip(in_shape[2:], dilated.shape[2:])]
        grad_out = F.pad(dilated, (0, extra[2], 0, extra[1], 0, extra[0]))
    return F.conv3d(grad_out.contiguous(memory_format=_CL), weight.flip(2, 3, 4), padding=1, groups=c)


def _weight_grad(x: torch.Tensor, grad_out: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """Gradient w.r.t. the `[C, 1, 3, 3, 3]` weight: per channel, the correlation of the padded
    input with the output gradient at the 27 kernel offsets, summed over the batch.

    Computed as one depthwise convolution over the B*C (batch, channel) planes, so that both
    tensors are used as they lie in memory, without a transposing copy.
    """
    b, c = x.shape[:2]
    planes = x.contiguous().view(1, b * c, *x.shape[2:])
    kernel = grad_out.contiguous().view(b * c, 1, *grad_out.shape[2:])
    out = F.conv3d(planes, kernel, padding=1, dilation=stride, groups=b * c)
    # with a stride, an even input size yields one unused trailing offset: keep the 3 kernel taps
    return out[:, :, :3, :3, :3].reshape(b, c, 1, 3, 3, 3).sum(0)


def _layout(x: torch.Tensor) -> torch.memory_format:
    """Hand results back in the caller's layout: mixed layouts make every later op slower."""
    return _CL if x.is_contiguous(memory_format=_CL) and not x.is_contiguous() else torch.contiguous_format


class _DepthwiseConv3dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride):
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        y = F.conv3d(x.contiguous(memory_format=_CL), weight, stride=stride, padding=1,
                     groups=weight.shape[0])
        return y.contiguous(memory_format=_layout(x))

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _input_grad(grad_out, weight, ctx.stride, x.shape).contiguous(memory_format=_layout(x))
        gw = _weight_grad(x, grad_out, ctx.stride).to(weight.dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None


class DepthwiseConv3d(nn.Conv3d):
    """`nn.Conv3d(C, C, 3, stride, padding=1, groups=C, bias=False)` with the fast CPU backward.

    Same parameters and state-dict keys as the `nn.Conv3d` it replaces: `[B, C, D, H, W]` ->
    `[B, C, ceil(D/s), ceil(H/s), ceil(W/s)]`.
    """

    def __init__(self, channels: int, stride=1):
        super().__init__(channels, channels, 3, stride, 1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # cuDNN's backward is fast, and for strided convs (a quarter or less of the voxels)
        # PyTorch's CPU backward measured faster than this one; reduced precision keeps
        # PyTorch's kernels, whose dtype handling autocast relies on
        if (x.is_cuda or self.stride != (1, 1, 1) or x.dtype != torch.float32
                or torch.is_autocast_enabled(x.device.type)):
            return super().forward(x)
        return _DepthwiseConv3dFn.apply(x, self.weight, tuple(self.stride))
