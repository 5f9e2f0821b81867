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

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import StrEnum, look_up_option
from torch import nn

from rog.progress import progress_bar


class Tiling(StrEnum):
    """How windows are laid and weighted. MONAI: `sliding_window_inference`'s positions and
    Gaussian, replicate padding (rog's own models). NNUNET: nnU-Net's predictor's positions,
    zero padding, its half-precision Gaussian and accumulation (models trained by it)."""

    MONAI = "monai"
    NNUNET = "nnunet"


class Importance(StrEnum):
    """Window weights: Gaussian (MONAI, nnU-Net), inverse distance to the centre (the paper),
    constant."""

    GAUSSIAN = "gaussian"
    INVERSE_DISTANCE = "inverse_distance"
    CONSTANT = "constant"


def checked(style: str, mode: str = "gaussian", overlap: float = 0.5) -> tuple[Tiling, Importance]:
    """The tiling and weighting named by `style` and `mode` (a misspelt name is a ValueError
    that lists the valid ones, MONAI's `look_up_option`), with `overlap` in [0, 1)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap {overlap}: must be in [0, 1) (at 1 the windows would not move)")
    return look_up_option(style, Tiling), look_up_option(mode, Importance)


def window_starts(size: int, patch: int, overlap: float, positions: str = "monai") -> list[int]:
    """Start indices of windows of length `patch` covering `size` voxels. "monai": a step of
    `int(patch * (1 - overlap))`, the last window moved back to end at `size` (outputs match
    `monai.inferers.sliding_window_inference`); "nnunet": the fewest windows whose step is at
    most patch * (1 - overlap), spread evenly from 0 to size - patch (nnU-Net's
    `compute_steps_for_sliding_window`); a window one voxel long visits each index once (as
    nnU-Net's 2d prediction visits each slice)."""
    if size <= patch:
        return [0]
    if patch == 1:
        return list(range(size))
    if look_up_option(positions, Tiling) == Tiling.NNUNET:
        n = math.ceil((size - patch) / (patch * (1 - overlap))) + 1
        return [int(np.round((size - patch) / (n - 1) * i)) for i in range(n)]
    step = max(int(patch * (1 - overlap)), 1)
    n = math.ceil((size - patch) / step) + 1
    return sorted({min(i * step, size - patch) for i in range(n)})


@lru_cache(maxsize=16)
def _importance_map(patch: tuple[int, ...], mode: str, sigma_scale: float, style: str) -> torch.Tensor:
    if mode == Importance.CONSTANT:
        return torch.ones(patch)
    if mode == Importance.GAUSSIAN and style == Tiling.NNUNET:
        return _nnunet_gaussian(patch, sigma_scale)
    coords = torch.meshgrid(*[torch.arange(p, dtype=torch.float64) - (p - 1) / 2 for p in patch], indexing="ij")
    if mode == Importance.GAUSSIAN:
        w = torch.exp(-0.5 * sum((c / (sigma_scale * p)) ** 2 for c, p in zip(coords, patch)))
    else:  # the inverse distance (`checked` admits no other mode)
        w = 1.0 / torch.sqrt(sum(c ** 2 for c in coords)).clamp(min=1.0)  # the paper's weighting
    # not scaled to max 1 (MONAI's Gaussian is not: an even patch has no voxel at its centre),
    # so MONAI's floor of 1e-3 acts on the same voxels: far window corners keep a say where no
    # window is centred, and the weights survive half precision, where 1e-10 would underflow
    return w.clamp(min=1e-3, max=1.0).float()


def _nnunet_gaussian(patch: tuple[int, ...], sigma_scale: float) -> torch.Tensor:
    """nnU-Net's window weights (`compute_gaussian`): a Gaussian-filtered delta at p // 2,
    max 10, rounded to half precision, zeros raised to the smallest non-zero weight."""
    from scipy.ndimage import gaussian_filter
    delta = np.zeros(patch)
    delta[tuple(p // 2 for p in patch)] = 1
    g = gaussian_filter(delta, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    w = torch.from_numpy(g / (g.max() / 10)).half()
    w[w == 0] = w[w != 0].min()
    return w.float()


def importance_map(patch: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125,
                   style: str = "monai") -> torch.Tensor:
    """Per-voxel window weights `[*patch]`: Gaussian with sigma = sigma_scale * patch (MONAI's
    `compute_importance_map`, floor 1e-3; `style` "nnunet": nnU-Net's own construction), inverse distance
    to the centre (the paper), or constant."""
    style, mode = checked(style, mode)
    return _importance_map(tuple(int(p) for p in patch), mode, float(sigma_scale), style).clone()


def _mirror_sets(axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    axes = tuple(axes or ())
    return [s for r in range(len(axes) + 1) for s in itertools.combinations(axes, r)]


def _tile(x: torch.Tensor, patch: list[int], overlap: float, pad_mode: str, positions: str = "monai"):
    """Pad `x` up to `patch` where smaller; returns (padded x, per-axis pad, window starts)."""
    spatial = list(x.shape[2:])
    pad = [max(p - s, 0) for p, s in zip(patch, spatial)]
    if any(pad):
        x = F.pad(x, [v for p in reversed(pad) for v in (p // 2, p - p // 2)], mode=pad_mode)
    starts = list(itertools.product(*[window_starts(s, p, overlap, positions) for s, p in zip(x.shape[2:], patch)]))
    return x, pad, starts


def _window_logits(model: nn.Module, windows: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    """Model logits of a batch of windows `[N, C, *patch]`, averaged over mirrorings."""
    logits = model(windows)
    for f in flips[1:]:  # flips[0] is the identity
        dims = [a + 2 for a in f]
        logits = logits + model(windows.flip(dims)).flip(dims)
    return logits / len(flips) if len(flips) > 1 else logits


def _crop(out: torch.Tensor, pad: list[int], spatial: Sequence[int]) -> torch.Tensor:
    if not any(pad):
        return out
    return out[(slice(None), slice(None), *[slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial)])]


def sliding_window(model: nn.Module, x: torch.Tensor, patch: Sequence[int], overlap: float = 0.5,
                   mode: str = "gaussian", batch_size: int = 4, mirror_axes: Sequence[int] | None = None,
                   window_device: torch.device | str | None = None,
                   out_device: torch.device | str | None = None, progress: bool = False,
                   pad_mode: str = "replicate", style: str = "monai") -> torch.Tensor:
    """Logits of `model` over a whole volume, differentiable with respect to `x`.

    Args:
        model: a patch model, `[N, C, *patch]` -> `[N, K, *patch]`.
        x: the volume `[B, C, D, H, W]`.
        patch: window size.
        overlap: in [0, 1).
        mode: "gaussian", "inverse_distance" or "constant" weights.
        batch_size: windows per forward pass.
        mirror_axes: spatial axes (0-2) whose every subset of flips the logits are averaged
            over (test-time augmentation); None: none.
        window_device: where the windows run (default: x's device).
        out_device: where the output is summed (default: the windows' device, or the CPU
            when the output would take over a quarter of the GPU's free memory).
        progress: a progress bar over the windows.
        pad_mode: for volumes smaller than `patch`, padded and cropped back: "replicate"
            (border voxels repeated, so the padding looks like the volume's edge rather than
            the normalised mean) or "constant" (zeros, as MONAI).
        style: "monai" or "nnunet" tiling ("nnunet": its window positions, zero padding and
            Gaussian, for models trained by it).

    Returns:
        `[B, K, D, H, W]` logits on `out_device`.
    """
    if x.ndim != 5:
        raise ValueError(f"sliding_window expects [B, C, D, H, W], got {tuple(x.shape)}")
    style, mode = checked(style, mode, overlap)
    patch = [int(p) for p in patch]
    window_device = torch.device(window_device) if window_device else x.device
    spatial = list(x.shape[2:])
    if style == Tiling.NNUNET:
        pad_mode = "constant"
    x, pad, starts = _tile(x, patch, overlap, pad_mode, style)
    size = list(x.shape[2:])
    flips = _mirror_sets(mirror_axes)
    out = weight = rounded = low_weight = None
    batches = range(0, len(starts), batch_size)
    if progress:
        batches = progress_bar(batches, desc="sliding window", leave=False)
    for b0 in batches:
        group = starts[b0:b0 + batch_size]
        slices = [_window(st, patch) for st in group]
        windows = torch.cat([x[(slice(None), slice(None), *sl)] for sl in slices]).to(window_device)
        logits = _window_logits(model, windows, flips)
        if out is None:  # the number of classes is known from the first windows
            out_device = _output_device(out_device, window_device, x.shape[0] * logits.shape[1], size)
            low = _ACCUMULATE.get(style)
            # with a gradient to take, the sums run in the logits' precision and the tool's
            # low-precision sums beside them give only the values (`straight_through`)
            dtype = logits.dtype if logits.requires_grad or low is None else low
            out = torch.zeros((x.shape[0], logits.shape[1], *size), device=out_device, dtype=dtype)
            weight = importance_map(patch, mode, style=style).to(out_device, dtype)
            if low is not None and dtype != low:
                rounded, low_weight = torch.zeros_like(out, dtype=low), weight.to(low)
        logits = logits.to(out_device)
        for i, sl in enumerate(slices):
            chunk = logits[i * x.shape[0]:(i + 1) * x.shape[0]]
            out[(slice(None), slice(None), *sl)] += chunk * weight
            if rounded is not None:
                rounded[(slice(None), slice(None), *sl)] += chunk.detach() * low_weight
    out.div_(_weight_sum(starts, patch, weight, size))  # in place: a copy would double the peak
    if rounded is not None:
        rounded.div_(_weight_sum(starts, patch, low_weight, size))
        out = straight_through(out, rounded)
    return _crop(out, pad, spatial).to(logits.dtype)


# nnU-Net's predictor sums the weighted logits and the weights in half precision (memory on
# the GPU); its style does the same, so the clean logits are its own to the last bit. Never
# in the backward pass: an attack's loss is a mean over N voxels, so each voxel's gradient is
# about 1/N, below half precision's smallest number (6e-8) on a clinical scan (N ~ 3e7).
_ACCUMULATE = {Tiling.NNUNET: torch.half}


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, exact: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.to(exact.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def straight_through(exact: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` in the forward pass; in the backward pass the gradient goes unchanged to
    `exact` (same shape). `value`: what the deployed tool computes (half-precision sums, a
    post-processed label map's logits), `exact`: the differentiable computation it rounds or
    post-processes. `exact + (value - exact).detach()` would not give `value`'s bits back."""
    return _StraightThrough.apply(exact, value)


def _window(start: Sequence[int], patch: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch))


def _weight_sum(starts, patch, weight: torch.Tensor, size) -> torch.Tensor:
    """Sum of the windows' weights per voxel `[*size]`; built after the model calls, so that it
    does not add to their peak memory."""
    norm = torch.zeros(size, device=weight.device, dtype=weight.dtype)
    for st in starts:
        norm[_window(st, patch)] += weight
    return norm


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
    logits through `sliding_window`. Attacks take it like any other model ("volume" scope).

    >>> import torch
    >>> whole = SlidingWindow(torch.nn.Conv3d(1, 2, 1), patch=[8, 8, 8], overlap=0.5)
    >>> whole(torch.rand(1, 1, 20, 12, 9)).shape
    torch.Size([1, 2, 20, 12, 9])
    >>> SlidingWindow(torch.nn.Conv3d(1, 2, 1), patch=[8, 8, 8], style="nnUnet")
    Traceback (most recent call last):
    ValueError: By 'nnUnet', did you mean 'nnunet'?
    ...
    """

    def __init__(self, model: nn.Module, patch: Sequence[int], overlap: float = 0.5,
                 mode: str = "gaussian", batch_size: int = 4, mirror_axes: Sequence[int] | None = None,
                 style: str = "monai", pad_mode: str = "replicate"):
        super().__init__()
        self.model = model
        style, mode = checked(style, mode, overlap)  # at construction, not at the first volume
        self.patch, self.overlap, self.mode = list(patch), overlap, mode
        self.batch_size, self.mirror_axes, self.style = batch_size, mirror_axes, style
        self.pad_mode = "constant" if style == Tiling.NNUNET else pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sliding_window(self.model, x, self.patch, self.overlap, self.mode, self.batch_size,
                              self.mirror_axes, pad_mode=self.pad_mode, style=self.style)

    def window_cache(self, x: torch.Tensor) -> "WindowCache":
        """Per-window logits of `x: [B, C, D, H, W]` for cheap re-evaluation of local changes."""
        return WindowCache(self, x)


class FoldMean(nn.Module):
    """The mean of whole-volume models' logits, `[B, C, D, H, W]` -> `[B, K, D, H, W]`:
    nnU-Net's ensemble of folds, each fold tiled on its own and the results averaged. With
    `style` "nnunet" the sum and the division are in half precision, as nnU-Net's predictor
    does them (the values), and the gradient is the full-precision mean's (`straight_through`)."""

    def __init__(self, members: Sequence[nn.Module], style: str = "monai"):
        super().__init__()
        self.members, self.style = nn.ModuleList(members), look_up_option(style, Tiling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = _ACCUMULATE.get(self.style)
        exact = value = None
        for member in self.members:  # running sums: one member's logits in memory at a time
            out = member(x)
            exact = out if exact is None else exact + out
            if low is not None:
                value = out.detach().to(low) if value is None else value.add_(out.detach().to(low))
        exact = exact / len(self.members)
        if low is None:
            return exact
        return straight_through(exact, value.div_(len(self.members)))


def tile(model: nn.Module, patch: Sequence[int], **options) -> nn.Module:
    """The whole-volume model `[B, C, D, H, W]` -> `[B, K, D, H, W]` of a patch model: its
    `SlidingWindow` with `options`; of an `nn.ModuleList` of patch models (an ensemble of
    folds), the `FoldMean` of their sliding windows."""
    if not isinstance(model, nn.ModuleList):
        return SlidingWindow(model, patch, **options)
    if len(model) == 1:
        return SlidingWindow(model[0], patch, **options)
    return FoldMean([SlidingWindow(m, patch, **options) for m in model], options.get("style", "monai"))


class WindowCache:
    """The per-window logits of one sliding-window pass over base volumes `[B, C, D, H, W]`,
    kept so that inputs differing from a base only inside a box re-run just the windows the
    box overlaps (Square's queries in volume scope: a cube of a few voxels touches a few of
    the dozens of windows). The other windows' logits are reused and everything is
    re-accumulated in the order `sliding_window` uses. Inference only (no gradients).
    """

    def __init__(self, sw: "SlidingWindow", x: torch.Tensor):
        self.sw, self.spatial = sw, list(x.shape[2:])
        xp, self.pad, self.starts = _tile(x, sw.patch, sw.overlap, sw.pad_mode, sw.style)
        self.flips = _mirror_sets(sw.mirror_axes)
        self.logits = [None] * len(self.starts)  # window -> [B, K, *patch]
        b = x.shape[0]
        pairs = [(i, w) for w in range(len(self.starts)) for i in range(b)]
        for (i, w), out in zip(pairs, self._run(xp, pairs)):
            if self.logits[w] is None:
                self.logits[w] = out.new_empty((b, *out.shape))
            self.logits[w][i] = out
        self.dtype = self.logits[0].dtype
        self.weight = importance_map(sw.patch, sw.mode, style=sw.style).to(self.logits[0].device,
                                                                            _ACCUMULATE.get(sw.style, self.dtype))
        self.norm = _weight_sum(self.starts, sw.patch, self.weight, xp.shape[2:])
        self.pending: dict[tuple[int, int], torch.Tensor] = {}

    @torch.no_grad()
    def _run(self, xp: torch.Tensor, pairs: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Logits `[K, *patch]` of window w of volume i, for each pair (i, w), in batches."""
        out = []
        for b0 in range(0, len(pairs), self.sw.batch_size):
            group = pairs[b0:b0 + self.sw.batch_size]
            windows = torch.stack([xp[i][(slice(None), *_window(self.starts[w], self.sw.patch))] for i, w in group])
            out += list(_window_logits(self.sw.model, windows, self.flips))
        return out

    def volume(self, owners: Sequence[int], changed: dict | None = None) -> torch.Tensor:
        """Whole-volume logits `[N, K, D, H, W]` of N inputs, input j being base volume
        `owners[j]` with its windows in `changed` ((j, window) -> logits) replaced."""
        changed = changed or {}
        out = None
        for w, st in enumerate(self.starts):
            chunk = torch.stack([changed.get((j, w), self.logits[w][o]) for j, o in enumerate(owners)])
            if out is None:
                out = chunk.new_zeros((len(owners), chunk.shape[1], *self.norm.shape), dtype=self.weight.dtype)
            out[(slice(None), slice(None), *_window(st, self.sw.patch))] += chunk * self.weight
        return _crop(out.div_(self.norm), self.pad, self.spatial).to(self.dtype)

    def evaluate(self, x: torch.Tensor, boxes: Sequence[Sequence[slice]], owners: Sequence[int]) -> torch.Tensor:
        """Logits `[N, K, D, H, W]` of inputs `x: [N, C, D, H, W]`, where input j equals base
        volume `owners[j]` outside the spatial box `boxes[j]` (one slice per axis)."""
        xp = _tile(x, self.sw.patch, self.sw.overlap, self.sw.pad_mode, self.sw.style)[0]
        pairs = []
        for j, box in enumerate(boxes):
            for w, st in enumerate(self.starts):
                # replicate padding spreads border voxels into the pad: then every window counts
                if any(self.pad) or all(b.start < s + p and s < b.stop
                                        for b, s, p in zip(box, st, self.sw.patch)):
                    pairs.append((j, w))
        self.pending = dict(zip(pairs, self._run(xp, pairs)))
        return self.volume(owners, self.pending)

    def commit(self, j: int, owner: int) -> None:
        """Make input j of the last `evaluate` the new base volume `owner`."""
        for (i, w), out in self.pending.items():
            if i == j:
                self.logits[w][owner] = out
