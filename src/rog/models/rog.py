"""ROG: the triangular lattice network of Daza et al. (MICCAI 2021), written as data.

The lattice is a list of named nodes N(level, column) and typed edges between them
(`same`: identity at one level, `down`: to the next coarser level, `up`: to the next finer
one). A node sums its inputs, applies a residual core and emits only the outputs some later
node (or the head) consumes. With 4 scales and length 2 this is the paper's 14-node lattice;
other scale counts and lengths follow the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rog.models.depthwise import CHANNELS_LAST, cpu_fast_path
from rog.models.layers import SepConv, norm

EdgeKind = Literal["same", "up", "down"]


@dataclass(frozen=True, order=True)
class NodeId:
    column: int
    level: int

    @property
    def key(self) -> str:
        return f"n{self.level}_{self.column}"


@dataclass(frozen=True)
class Edge:
    src: NodeId
    dst: NodeId
    kind: EdgeKind


def lattice(num_scales: int = 4, length: int = 2) -> tuple[list[NodeId], list[Edge]]:
    """Nodes (in execution order) and edges of the triangular lattice.

    Columns d = 0..D-1 with D = 2 (num_scales - 1) + 2 (length - 1) + 1; node N(l, d) exists
    when l <= d <= D-1-l and d = l (mod 2). N(l, d) takes `same` from N(l, d-2), `down` from
    N(l-1, d-1) and `up` from N(l+1, d-1), whichever exist. Defaults: the paper's 14 nodes.
    """
    if num_scales < 2 or length < 1:
        raise ValueError("a lattice needs at least 2 scales and length >= 1")
    columns = 2 * (num_scales - 1) + 2 * (length - 1) + 1
    exists = {NodeId(d, lv) for lv in range(num_scales) for d in range(lv, columns - lv, 2)}
    nodes = sorted(exists)
    edges = []
    for n in nodes:
        for src, kind in ((NodeId(n.column - 2, n.level), "same"),
                          (NodeId(n.column - 1, n.level - 1), "down"),
                          (NodeId(n.column - 1, n.level + 1), "up")):
            if src in exists:
                edges.append(Edge(src, n, kind))
    return nodes, edges


class Node(nn.Module):
    """Lattice cell at width C: y = x + core(x); optional `up` (C -> C/2, then upsampled by
    `up_factor`) and `down` (C -> 2C, stride `down_stride`) outputs, all pre-activation."""

    def __init__(self, channels: int, up_factor=None, down_stride=None, fast: bool = True):
        super().__init__()
        self.core = nn.Sequential(
            nn.SiLU(), SepConv(channels, channels, fast=fast), norm(channels),
            nn.SiLU(), SepConv(channels, channels, fast=fast), norm(channels),
        )
        self.up_factor = tuple(up_factor) if up_factor is not None else None
        # the 1x1x1 conv runs at the low resolution, before upsampling (cheaper, as published)
        self.up = nn.Sequential(nn.SiLU(), nn.Conv3d(channels, channels // 2, 1, bias=False),
                                norm(channels // 2)) if up_factor is not None else None
        self.down = nn.Sequential(nn.SiLU(), nn.Conv3d(channels, channels * 2, 1, tuple(down_stride), bias=False),
                                  norm(channels * 2)) if down_stride is not None else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = x + self.core(x)
        out = {"same": y}
        if self.up is not None:
            out["up"] = F.interpolate(self.up(y), scale_factor=self.up_factor, mode="trilinear",
                                      align_corners=True)
        if self.down is not None:
            out["down"] = self.down(y)
        return out


def _triple(s) -> tuple[int, int, int]:
    t = (s, s, s) if isinstance(s, int) else tuple(int(v) for v in s)
    if len(t) != 3 or any(v not in (1, 2) for v in t):
        raise ValueError(f"a stride must be 1, 2 or a per-axis triple of them, got {s!r}")
    return t


class ROG(nn.Module):
    """ROG network: `[B, in_channels, D, H, W]` -> logits `[B, num_classes, D, H, W]`.

    `strides` are the plan's s0, s1, s2 (per-axis triples allowed); `width` is the level-0
    width (paper: 64; level l has width * 2**l; stem and head widths scale with it). Input
    sizes must divide by `total_stride` on each axis. On the CPU in fp32 the activations are
    kept channels-last 3D, where this package's depthwise conv and instance norm run fast;
    `fast=False` builds the plain PyTorch reference (same parameters, default layout,
    PyTorch's depthwise conv with its slow CPU backward).
    """

    def __init__(self, in_channels: int, num_classes: int,
                 strides: Sequence = ((1, 1, 1), (2, 2, 2), (2, 2, 2)), width: int = 64,
                 num_scales: int = 4, length: int = 2, fast: bool = True):
        super().__init__()
        if width % 2:
            raise ValueError("width must be even (the stem and head use width/2)")
        s0, s1, s2 = (_triple(s) for s in strides)
        half = width // 2
        self.total_stride = tuple(a * b * c * 2 ** (num_scales - 2) for a, b, c in zip(s0, s1, s2))
        f = self.fast = fast
        self.stem1 = nn.Sequential(SepConv(in_channels, half, fast=f), norm(half), nn.SiLU(),
                                   SepConv(half, half, s0, fast=f), norm(half), nn.SiLU())
        self.stem2 = nn.Sequential(SepConv(half, half, fast=f), norm(half), nn.SiLU(),
                                   SepConv(half, width, s1, fast=f), norm(width))
        self.nodes_order, self.edges = lattice(num_scales, length)
        last = self.nodes_order[-1]
        emits_up = {e.src for e in self.edges if e.kind == "up"} | {last}
        emits_down = {e.src for e in self.edges if e.kind == "down"}
        self.nodes = nn.ModuleDict()
        for n in self.nodes_order:
            # level 1 -> 0 upsamples by s2, the last node back to the stem by s1; else by 2
            up = (s1 if n == last else s2 if n.level == 1 else (2, 2, 2)) if n in emits_up else None
            down = (s2 if n.level == 0 else (2, 2, 2)) if n in emits_down else None
            self.nodes[n.key] = Node(width * 2 ** n.level, up, down, fast=f)
        self.inputs = {n: [e for e in self.edges if e.dst == n] for n in self.nodes_order}
        self.head_fuse = nn.Sequential(nn.SiLU(), nn.Conv3d(half, half, 3, 1, 1, bias=False), norm(half))
        self.head_factor = s0
        self.head_out = nn.Sequential(nn.SiLU(), nn.Conv3d(half, num_classes, 1, bias=False))

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ValueError(f"ROG expects [B, C, D, H, W], got shape {tuple(x.shape)}")
        for axis, (n, t) in enumerate(zip(x.shape[2:], self.total_stride)):
            if n % t:
                raise ValueError(f"input size {n} on spatial axis {axis} is not divisible by the "
                                 f"network's total stride {t} on that axis (total {self.total_stride})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.fast and cpu_fast_path(x):
            x = x.contiguous(memory_format=CHANNELS_LAST)
        x_small = self.stem1(x)
        outputs: dict[NodeId, dict[str, torch.Tensor]] = {}
        for n in self.nodes_order:
            incoming = self.inputs[n]
            inp = self.stem2(x_small) if not incoming else sum(outputs[e.src][e.kind] for e in incoming)
            outputs[n] = self.nodes[n.key](inp)
        y = outputs[self.nodes_order[-1]]["up"] + x_small
        y = F.interpolate(self.head_fuse(y), scale_factor=self.head_factor, mode="trilinear",
                          align_corners=True)
        # the logits go back to the default layout (few channels: a cheap copy)
        return self.head_out(y).contiguous()
