"""The artefacts real scanners produce, at five severities, built on TorchIO's transforms.

Each corruption has five levels of one physical parameter (severity 0 is the identity,
through the same code path, which the benchmark checks). They act on a model input
`[C, X, Y, Z]` whose voxels are `spacing` mm apart, channel by channel, in the channel's
range-normalised intensities u = (x - lo) / (hi - lo) of the whole case (the box of the
threat model), so that air is 0, a bias field multiplies tissue rather than z-scores, and
padding after motion or resampling is air; the result is mapped back, not clipped. Random
draws (motion path, field coefficients, noise) are seeded per (case, corruption) and shared by
the severities: the same command corrupts the same volumes, and a higher severity is the same
artefact made stronger (the tests check the realised strength is monotone).

| name | parameter per severity 1..5 | meaning |
|---|---|---|
| noise | 0.1, 0.2, 0.3, 0.5, 0.8 | Gaussian noise sd, as a fraction of the foreground intensity sd |
| blur | 0.5, 1, 1.5, 2, 3 | Gaussian blur sd in mm |
| bias | 0.1, 0.2, 0.3, 0.4, 0.6 | bias field: max |coefficient| of the order-3 log-field polynomial |
| motion | 1, 2, 3, 5, 8 | rigid motion during acquisition: up to this many degrees and mm, 2 movements |
| ghosting | 0.2, 0.4, 0.6, 0.8, 1.0 | k-space ghosting: ghost intensity, 4 ghosts along the first axis |
| spike | 0.2, 0.4, 0.6, 0.8, 1.0 | k-space spike (herringbone): spike intensity |
| gamma | 0.1, 0.2, 0.3, 0.4, 0.5 | contrast change: log gamma (u -> u ** exp(level)) |
| anisotropy | 1.5, 2, 3, 4, 6 | thick slices: through-plane downsampling factor (then back) |
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Corruption:
    name: str
    levels: tuple[float, ...]  # severity 1..5
    identity: float  # the parameter at severity 0
    meaning: str
    make: Callable  # (level, spacing, through-plane axis) -> TorchIO transform
    strength: Callable  # the applied (deterministic) TorchIO transforms -> the artefact's realised size

    def level(self, severity: int) -> float:
        return self.identity if severity == 0 else self.levels[severity - 1]


def _largest(values) -> float:
    return float(np.abs(np.asarray(values, float)).max())


def _tio():
    import torchio  # imported on use: it pulls SimpleITK
    return torchio


CORRUPTIONS = {c.name: c for c in (
    Corruption("noise", (0.1, 0.2, 0.3, 0.5, 0.8), 0.0, "noise sd / foreground intensity sd",
               lambda v, sp, ax: _tio().RandomNoise(std=(v, v)),  # v rescaled per channel below
               lambda ts: ts[-1].noise_std["image"]),
    Corruption("blur", (0.5, 1.0, 1.5, 2.0, 3.0), 0.0, "Gaussian blur sd in mm",
               lambda v, sp, ax: _tio().RandomBlur(std=(v, v)), lambda ts: max(ts[-1].std["image"])),
    Corruption("bias", (0.1, 0.2, 0.3, 0.4, 0.6), 0.0, "bias-field coefficient bound (order 3)",
               lambda v, sp, ax: _tio().RandomBiasField(coefficients=v, order=3),
               lambda ts: _largest(ts[-1].coefficients["image"])),
    Corruption("motion", (1.0, 2.0, 3.0, 5.0, 8.0), 0.0, "motion up to this many degrees and mm",
               lambda v, sp, ax: _tio().RandomMotion(degrees=v, translation=v, num_transforms=2),
               lambda ts: max(_largest(ts[-1].degrees["image"]), _largest(ts[-1].translation["image"]))),
    Corruption("ghosting", (0.2, 0.4, 0.6, 0.8, 1.0), 0.0, "ghost intensity (4 ghosts)",
               lambda v, sp, ax: _tio().RandomGhosting(num_ghosts=(4, 4), axes=(0,), intensity=(v, v)),
               lambda ts: ts[-1].intensity["image"]),
    Corruption("spike", (0.2, 0.4, 0.6, 0.8, 1.0), 0.0, "k-space spike intensity",
               lambda v, sp, ax: _tio().RandomSpike(num_spikes=(1, 1), intensity=(v, v)),
               lambda ts: ts[-1].intensity["image"]),
    Corruption("gamma", (0.1, 0.2, 0.3, 0.4, 0.5), 0.0, "log gamma",
               lambda v, sp, ax: _tio().RandomGamma(log_gamma=(v, v)),
               lambda ts: abs(float(np.log(ts[-1].gamma["image"][0])))),
    Corruption("anisotropy", (1.5, 2.0, 3.0, 4.0, 6.0), 1.0, "through-plane downsampling factor",
               lambda v, sp, ax: _tio().RandomAnisotropy(axes=(ax,), downsampling=(v, v)),
               # down (to a spacing), then back (to the original grid): the thick slices' spacing
               lambda ts: max(ts[0].target)),
)}


def expand_names(names: list[str], known, what: str) -> list[str]:
    """`names` with "all" replaced by every one of `known`, each once, in order; an unknown
    name is a ValueError naming it and the `what` it is not."""
    out: list[str] = []
    for n in names:
        for c in (list(known) if n == "all" else [n]):
            if c not in known:
                raise ValueError(f"unknown {what} {c!r}; choose from {list(known)} or 'all'")
            if c not in out:
                out.append(c)
    return out


def expand(names: list[str]) -> list[str]:
    """Corruption names, "all" for every one; an unknown name is a ValueError naming it."""
    return expand_names(names, CORRUPTIONS, "corruption")


def foreground_sd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-channel intensity sd `[C]` of x `[C, ...]` over the labelled foreground of y `[...]`
    (all voxels where nothing is labelled): the unit of the noise severity."""
    flat, fg = x.flatten(1), y.flatten() > 0
    return (flat[:, fg] if bool(fg.any()) else flat).std(1)


def seed_of(case: str, name: str, seed: int = 0) -> int:
    """The seed of one case's artefact: a stable function of (case, corruption), the same at
    every severity. TorchIO scales its draws by the level (a uniform in (-v, v) is v times one
    in (-1, 1); noise is sd times a normal draw), so a higher severity is the same motion path,
    bias field or noise made stronger, not a new draw that may happen to be weaker."""
    return zlib.crc32(f"{case}|{name}|{seed}".encode())


def centred_affine(spacing, shape) -> np.ndarray:
    """The voxel-to-world affine `[4, 4]` of a grid of `shape` (X, Y, Z) at `spacing` mm whose
    world origin is the grid's centre, voxel (n - 1) / 2 on each axis. TorchIO's `Motion`
    rotates about the world origin (it builds its rotation about the image centre, then drops
    the centre when it stores the matrix): at the origin it rotates about the volume's centre,
    as `rog.artefacts`' motion does, instead of a corner."""
    sp = np.asarray([float(v) for v in spacing])
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -sp * (np.asarray(shape, float) - 1) / 2
    return affine


def corrupt(x: torch.Tensor, name: str, severity: int, spacing, lo: torch.Tensor, hi: torch.Tensor,
            foreground_sd: torch.Tensor, seed: int, strengths: list | None = None) -> torch.Tensor:
    """The corrupted copy of one case, deterministic in `seed`.

    Args:
        x: the case `[C, X, Y, Z]` in model input units.
        name: a corruption of `CORRUPTIONS`.
        severity: 0 (identity) to 5.
        spacing: mm per voxel axis.
        lo: `[C]`, the case's channel minimum.
        hi: `[C]`, its channel maximum.
        foreground_sd: `[C]`, its foreground intensity sd.
        seed: `seed_of(case, name, seed)`, shared by the severities.
        strengths: if given, receives each channel's realised artefact size.

    Returns:
        A tensor like x.
    """
    c = CORRUPTIONS[name]
    level = c.level(severity)
    tio = _tio()
    axis = int(np.argmax(spacing)) if max(spacing) / min(spacing) > 1.5 else 2
    # motion only: the others' output does not depend on the origin (anisotropy's resampling to
    # rounding, 6e-8), and their recorded figures stay bit for bit
    affine = centred_affine(spacing, x.shape[1:]) if name == "motion" else np.diag([*map(float, spacing), 1.0])
    out = torch.empty_like(x)
    span = (hi - lo).clamp(min=1e-12)
    with torch.random.fork_rng(devices=[]):
        for ch in range(x.shape[0]):
            # noise is given relative to the foreground sd: in range units that is level * sd / span
            v = level * float(foreground_sd[ch] / span[ch]) if name == "noise" else level
            torch.manual_seed(seed + ch)
            u = ((x[ch].detach().cpu().float() - lo[ch]) / span[ch])[None]
            subject = c.make(v, spacing, axis)(tio.Subject(image=tio.ScalarImage(tensor=u, affine=affine)))
            if strengths is not None:
                strengths.append(float(c.strength(subject.get_applied_transforms())))
            u = subject["image"].data[0]
            out[ch] = (lo[ch] + u * span[ch]).to(x)
    return out
