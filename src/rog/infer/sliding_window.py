"""Differentiable sliding-window inference over whole volumes.

Windows tile the volume with a step of patch * (1 - overlap) (MONAI's positions); each window's logits are weighted by an importance map, accumulated, and divided by
the accumulated weights. Every step is a differentiable tensor operation, so attacks can
take gradients of a whole-volume prediction through it. Windows may run on one device (GPU)
while the accumulator lives on another (CPU) for volumes too large for the GPU; beyond the
output itself the only full-size buffer is the single-channel sum of weights.
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of length `patch` covering `size` voxels: a step of
    `int(patch * (1 - overlap))`, the last window moved back to end at `size`. These are
    MONAI's positions, so outputs match `monai.inferers.sliding_window_inference`."""
    if size <= patch:
        return [0]
    step = max(int(patch * (1 - overlap)), 1)
    n = math.ceil((size - patch) / step) + 1
    return sorted({min(i * step, size - patch) for i in range(n)})


@lru_cache(maxsize=16)
def _importance_map(patch: tuple[int, ...], mode: str, sigma_scale: float) -> torch.Tensor:
    if mode == "constant":
        return torch.ones(patch)
    coords = torch.meshgrid(*[torch.arange(p, dtype=torch.float64) - (p - 1) / 2 for p in patch], indexing="ij")
    if mode == "gaussian":
        w = torch.exp(-0.5 * sum((c / (sigma_scale * p)) ** 2 for c, p in zip(coords, patch)))
    elif mode == "inverse_distance":
        w = 1.0 / torch.sqrt(sum(c ** 2 for c in coords)).clamp(min=1.0)  # the paper's weighting
    else:
        raise ValueError(f"unknown importance mode {mode!r}: gaussian, inverse_distance or constant")
    w = w / w.max()
    # a floor of 1e-3 (as MONAI): far window corners keep a say where no window is centred,
    # and the weights survive half precision, where 1e-10 would underflow
    return w.clamp(min=1e-3, max=1.0).float()


def importance_map(patch: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """Per-voxel window weights `[*patch]`, max 1: Gaussian with sigma = sigma_scale * patch
    (nnU-Net, MONAI), inverse distance to the centre (the paper), or constant."""
    return _importance_map(tuple(int(p) for p in patch), mode, float(sigma_scale)).clone()


def _mirror_sets(axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    axes = tuple(axes or ())
    return [s for r in range(len(axes) + 1) for s in itertools.combinations(axes, r)]


def sliding_window(model: nn.Module, x: torch.Tensor, patch: Sequence[int], overlap: float = 0.5,
                   mode: str = "gaussian", batch_size: int = 4, mirror_axes: Sequence[int] | None = None,
                   window_device: torch.device | str | None = None,
                   out_device: torch.device | str | None = None, progress: bool = False,
                   pad_mode: str = "replicate") -> torch.Tensor:
    """Logits of `model` over a whole volume.

    Takes `x: [B, C, D, H, W]`; returns `[B, K, D, H, W]` on `out_device` (default: the
    windows' device, or the CPU when the output would take over a quarter of the GPU's free
    memory). `mirror_axes`
    (spatial axes 0-2) averages the logits over every subset of flips (test-time
    augmentation). Volumes smaller than `patch` are padded with `pad_mode` ("replicate":
    border voxels repeated, so the padding looks like the volume's edge rather than like the
    normalised mean intensity; "constant": zeros, as MONAI) and cropped back.
    Differentiable with respect to `x`.
    """
    if x.ndim != 5:
        raise ValueError(f"sliding_window expects [B, C, D, H, W], got {tuple(x.shape)}")
    patch = [int(p) for p in patch]
    window_device = torch.device(window_device) if window_device else x.device
    spatial = list(x.shape[2:])
    pad = [max(p - s, 0) for p, s in zip(patch, spatial)]
    if any(pad):
        x = F.pad(x, [v for p in reversed(pad) for v in (p // 2, p - p // 2)], mode=pad_mode)
    size = list(x.shape[2:])
    starts = list(itertools.product(*[window_starts(s, p, overlap) for s, p in zip(size, patch)]))
    flips = _mirror_sets(mirror_axes)
    out = weight = None
    batches = range(0, len(starts), batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="sliding window", leave=False)
    for b0 in batches:
        group = starts[b0:b0 + batch_size]
        slices = [tuple(slice(s, s + p) for s, p in zip(st, patch)) for st in group]
        windows = torch.cat([x[(slice(None), slice(None), *sl)] for sl in slices]).to(window_device)
        logits = model(windows)
        for f in flips[1:]:  # flips[0] is the identity
            dims = [a + 2 for a in f]
            logits = logits + model(windows.flip(dims)).flip(dims)
        if len(flips) > 1:
            logits = logits / len(flips)
        if out is None:  # the number of classes is known from the first windows
            out_device = _output_device(out_device, window_device, x.shape[0] * logits.shape[1], size)
            out = torch.zeros((x.shape[0], logits.shape[1], *size), device=out_device, dtype=logits.dtype)
            weight = importance_map(patch, mode).to(out_device, x.dtype)
        logits = logits.to(out_device)
        for i, sl in enumerate(slices):
            chunk = logits[i * x.shape[0]:(i + 1) * x.shape[0]]
            out[(slice(None), slice(None), *sl)] += chunk * weight
    # the sum of weights is built after the model calls, so it does not add to their peak
    norm = torch.zeros(size, device=out.device, dtype=weight.dtype)
    for st in starts:
        norm[tuple(slice(s, s + p) for s, p in zip(st, patch))] += weight
    out.div_(norm)  # in place: the division's backward does not need `out`, and a copy would double the peak
    if any(pad):
        out = out[(slice(None), slice(None), *[slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial)])]
    return out


def _output_device(requested, window_device: torch.device, channels: int, size) -> torch.device:
    """The accumulator's device: as requested, else the windows' device unless that is a GPU
    whose free memory the output would crowd (over a quarter of it): then the CPU."""
    if requested:
        return torch.device(requested)
    if window_device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(window_device)
        if 4 * channels * math.prod(size) * 2 > free / 4:  # output + normalised copy, fp32
            return torch.device("cpu")
    return window_device


class SlidingWindow(nn.Module):
    """Wraps a patch model into a whole-volume model: `[B, C, D, H, W]` -> `[B, K, D, H, W]`
    logits through `sliding_window`. Attacks take it like any other model ("volume" scope)."""

    def __init__(self, model: nn.Module, patch: Sequence[int], overlap: float = 0.5,
                 mode: str = "gaussian", batch_size: int = 4, mirror_axes: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        self.patch, self.overlap, self.mode = list(patch), overlap, mode
        self.batch_size, self.mirror_axes = batch_size, mirror_axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sliding_window(self.model, x, self.patch, self.overlap, self.mode, self.batch_size,
                              self.mirror_axes)
