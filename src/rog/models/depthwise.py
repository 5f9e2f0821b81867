"""Depthwise 3x3x3 convolution with a fast CPU backward, in channels-last 3D layout.

PyTorch's CPU backward of a depthwise 3D convolution is about 10x slower than its forward
(REFERENCE section 1: 0.5 s vs 0.04 s for a 2x64x32x48x32 tensor), and it dominates ROG's
training step and every gradient-based attack. On the CPU in fp32, everything here runs in
channels-last 3D layout, where oneDNN's depthwise kernel is about 6x faster than in the
default layout (14 vs 81 ms forward on that tensor):
- forward: PyTorch's convolution;
- input gradient: the same forward kernel applied to the output gradient with the kernel
  flipped (after inserting zeros between output voxels when strided);
- weight gradient: per sample and slab of rows, a depthwise convolution of the input with the
  output gradient as its kernel (the stride becomes a dilation), summed.
ROG keeps its activations channels-last on the CPU (`cpu_fast_path`), so no layout copies are
made; a caller in the default layout gets its result back in that layout. On CUDA, cuDNN's own
backward is already fast, so PyTorch's implementation is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS_LAST = torch.channels_last_3d


def cpu_fast_path(x: torch.Tensor) -> bool:
    """Whether the channels-last CPU kernels of this package apply to `x`: fp32 on the CPU and
    no autocast (reduced precision keeps PyTorch's kernels, whose dtype handling autocast
    relies on)."""
    return not x.is_cuda and x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format to hand results back in: mixed layouts make every later op slower."""
    return CHANNELS_LAST if x.is_contiguous(memory_format=CHANNELS_LAST) and not x.is_contiguous() \
        else torch.contiguous_format


def _input_grad(grad_out: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int, int],
                in_shape: torch.Size) -> torch.Tensor:
    """Gradient w.r.t. the input `[B, C, D, H, W]` of a padding-1 depthwise conv (channels-last)."""
    c = weight.shape[0]
    if any(s > 1 for s in stride):
        b, _, *out = grad_out.shape
        dilated = torch.empty((b, c, *[(o - 1) * s + 1 for o, s in zip(out, stride)]), dtype=grad_out.dtype,
                              device=grad_out.device, memory_format=CHANNELS_LAST).zero_()
        dilated[:, :, ::stride[0], ::stride[1], ::stride[2]] = grad_out
        # an even input size leaves one more input voxel than the dilated grid covers
        extra = [n - d for n, d in zip(in_shape[2:], dilated.shape[2:])]
        grad_out = F.pad(dilated, (0, extra[2], 0, extra[1], 0, extra[0]))
    return F.conv3d(grad_out.contiguous(memory_format=CHANNELS_LAST), weight.flip(2, 3, 4),
                    padding=1, groups=c)


# bytes of output gradient per weight-gradient slab: small enough that a slab and its input
# rows stay in cache across the 27 kernel offsets (measured: 1 MiB halves the time of a
# 2x64x32x48x32 weight gradient against one call per sample; smaller tensors gain nothing)
_SLAB_BYTES = 2 ** 20


def _weight_grad(x: torch.Tensor, grad_out: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """Gradient w.r.t. the `[C, 1, 3, 3, 3]` weight of a padding-1 depthwise conv: per channel,
    the correlation of the padded input with the output gradient at the 27 kernel offsets,
    summed over the batch.

    Computed as depthwise convolutions of channels-last input rows with output-gradient rows
    `[C, 1, t, h, w]` as the kernel (the stride becomes a dilation), one per sample and slab of
    `t` output rows along D. oneDNN runs such a convolution as 27 passes over its operands, so
    slabs that fit in cache make it about 2x faster on large tensors.
    """
    c, depth = x.shape[1], x.shape[2]
    grad_out = grad_out.contiguous(memory_format=CHANNELS_LAST)
    out_depth = grad_out.shape[2]
    rows = max(1, _SLAB_BYTES // (grad_out[0, :, 0].numel() * grad_out.element_size()))
    if rows >= out_depth:
        slabs = [(x, grad_out, 1)]
    else:
        slabs = []
        for o0 in range(0, out_depth, rows):
            t = min(rows, out_depth - o0)
            # input rows o0*s - 1 .. (o0+t-1)*s + 1, zero rows where they fall outside x
            lo, hi = o0 * stride[0] - 1, (o0 + t - 1) * stride[0] + 2
            xs = x[:, :, max(lo, 0):min(hi, depth)]
            if lo < 0 or hi > depth:
                xs = F.pad(xs, (0, 0, 0, 0, max(-lo, 0), max(hi - depth, 0)))
            slabs.append((xs, grad_out[:, :, o0:o0 + t], 0))
    total = None
    for xs, gs, pad_d in slabs:
        for xb, gb in zip(xs.split(1), gs.split(1)):
            out = F.conv3d(xb, gb.transpose(0, 1), padding=(pad_d, 1, 1), dilation=stride, groups=c)
            total = out if total is None else total + out
    # with a stride, an even input size yields one unused trailing offset: keep the 3 kernel taps
    return total[0, :, :3, :3, :3].reshape(c, 1, 3, 3, 3)


class _DepthwiseConv3dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride):
        layout = layout_of(x)
        x = x.contiguous(memory_format=CHANNELS_LAST)
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.layout = stride, layout
        y = F.conv3d(x, weight, stride=stride, padding=1, groups=weight.shape[0])
        return y.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _input_grad(grad_out, weight, ctx.stride, x.shape).contiguous(memory_format=ctx.layout)
        gw = _weight_grad(x, grad_out, ctx.stride).to(weight.dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None


class DepthwiseConv3d(nn.Conv3d):
    """`nn.Conv3d(C, C, 3, stride, padding=1, groups=C, bias=False)` with the fast CPU backward.

    Same parameters and state-dict keys as the `nn.Conv3d` it replaces: `[B, C, D, H, W]` ->
    `[B, C, ceil(D/s), ceil(H/s), ceil(W/s)]`, in the input's memory layout.
    """

    def __init__(self, channels: int, stride=1):
        super().__init__(channels, channels, 3, stride, 1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not cpu_fast_path(x):
            return super().forward(x)
        return _DepthwiseConv3dFn.apply(x, self.weight, tuple(self.stride))
