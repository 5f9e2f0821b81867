"""Scanner artefacts as differentiable maps of bounded parameters, on `rog.corruptions`' scale.

Each model maps range-normalised intensities u `[B, C, X, Y, Z]` (the threat model's box
coordinates: air 0, the case's maximum 1) and parameters t `[B, P]` in [-1, 1]^P to the
corrupted u. t = 0 is the identity, and the severity's physical level (the same number
`rog.corruptions` uses at that severity) scales t, so the box [-1, 1]^P at severity s holds
every artefact of size s and nothing larger:

| name | parameters per channel | at level v |
|---|---|---|
| bias | 20 coefficients of the order-3 log-field polynomial (TorchIO's basis) | each in [-v, v] |
| gamma | log gamma | in [-v, v] (u -> u ** exp(log gamma)) |
| blur | Gaussian sd per axis, mm | in [0, v] (sd = v |t|) |
| noise | one value per voxel | noise of RMS <= v foreground sds, no voxel beyond 4 of them |
| motion | 2 rigid movements: 3 angles (degrees), 3 shifts (mm) | each in [-v, v] |
| chain | the parameters of motion, bias, blur, noise, gamma in turn | each its own bound |

Random draws (`draw`) follow `rog.corruptions`' distributions: uniform coefficients, angles
and shifts; Gaussian noise; the severity's gamma and blur (TorchIO draws those as one value).
Motion is TorchIO's k-space model (the image at each position fills a band of k-space along
the last axis, the unmoved image the centre) with its movements at TorchIO's mean times 1/3
and 2/3, resampled trilinearly with air outside; shifts as TorchIO's (ITK's LPS axes), but
rotations about the volume's centre (TorchIO's motion rotates about the world origin, wherever
the affine puts it: at a corner of `rog.corruptions`' volumes, which moves the far corner
further than the degrees say).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rog.corruptions import CORRUPTIONS, expand_names

NOISE_PEAK = 4.0  # largest noise value, in noise sds (a Gaussian draw's peak is about 4-5 sd)
MOTION_TIMES = (1 / 3, 2 / 3)
# the largest |log bias field| over the volume, in units of the severity's coefficient bound:
# TorchIO's uniform draws realise a median 4.5 and a 99th percentile 8.3 (measured, any grid:
# the polynomial peaks at the corners), the coefficient box's corners 20 (x403 at severity 3)
BIAS_PEAK = 8.0


class Artefact:
    """One artefact at one physical `level` for cases on a grid of `spacing` mm, whose
    foreground intensity sd in range units is `noise_unit` `[C]` (or `[B, C]`, per instance). Subclasses define
    `per_channel(shape)`, `_apply` and `_draw`."""

    name = ""
    deterministic = False  # every random draw is the same point (TorchIO draws one value)
    search = "apgd"  # the worst case's search where the gradient reaches the parameters (`rog.artefacts.search`)

    def __init__(self, level: float, spacing, noise_unit: torch.Tensor):
        self.level, self.spacing = float(level), [float(s) for s in spacing]
        self.noise_unit = noise_unit

    def per_channel(self, shape) -> int:
        """Parameters per channel for a volume of spatial `shape` (X, Y, Z)."""
        raise NotImplementedError

    def size(self, shape) -> int:
        """Parameters per instance P for volumes `[C, X, Y, Z]` of `shape`."""
        return shape[0] * self.per_channel(shape[1:])

    def __call__(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The corrupted u: `u [B, C, X, Y, Z]`, `t [B, P]` in [-1, 1] -> like u."""
        b, c = u.shape[:2]
        return self._apply(u, t.reshape(b, c, -1))

    def draw(self, n: int, shape, generator: torch.Generator) -> torch.Tensor:
        """`n` random parameter vectors `[n, P]` for volumes of `shape` `[C, X, Y, Z]`."""
        return self._draw(n, shape[0], self.per_channel(shape[1:]), generator).reshape(n, -1)

    def _draw(self, n: int, c: int, p: int, g: torch.Generator) -> torch.Tensor:
        return torch.rand(n, c, p, generator=g) * 2 - 1

    def _apply(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self, t: torch.Tensor, shape) -> dict:
        """The physical parameters of one vector t `[P]` for volumes of `shape`, for records."""
        raise NotImplementedError


def _rounded(values: torch.Tensor) -> list[float]:
    """A record's numbers: `values` as a flat list, 4 decimals."""
    return [round(v, 4) for v in values.flatten().tolist()]


def bias_basis(shape) -> torch.Tensor:
    """TorchIO's order-3 polynomial basis `[20, X, Y, Z]` on a grid of `shape`: coordinates
    in [-1, 1] per axis, terms ordered x, then y, then z powers."""
    axes = [np.arange(-n / 2, n / 2) + 0.5 for n in shape]
    axes = [torch.as_tensor(a / a.max() if a.max() > 0 else a, dtype=torch.float32) for a in axes]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x ** i * y ** j * z ** k for i in range(4) for j in range(4 - i) for k in range(4 - i - j)])


class Bias(Artefact):
    name = "bias"

    def per_channel(self, shape) -> int:
        return 20

    def log_field(self, t: torch.Tensor, shape) -> torch.Tensor:
        """The log field `[B, C, X, Y, Z]` of coefficients t `[B, C, 20]` (in [-1, 1], times the
        level) on a grid of `shape`, scaled down where its peak |value| exceeds `BIAS_PEAK`
        times the level: the severity bounds the field itself, as the random draws realise it
        (all but about 1 % of them unchanged), not only its coefficients."""
        field = torch.einsum("bcn,nxyz->bcxyz", self.level * t, bias_basis(shape).to(t))
        bound = BIAS_PEAK * self.level
        peak = field.abs().amax((2, 3, 4), keepdim=True)
        return field * (bound / torch.maximum(peak, torch.full_like(peak, max(bound, 1e-12))))

    def _apply(self, u, t):
        return u * torch.exp(self.log_field(t, u.shape[2:]))

    def describe(self, t, shape):
        peak = self.log_field(t.view(1, shape[0], 20), shape[1:]).abs().amax((2, 3, 4))
        return {"coefficients": _rounded(self.level * t), "peak_log_field": _rounded(peak)}


class Gamma(Artefact):
    name = "gamma"
    deterministic = True

    def per_channel(self, shape) -> int:
        return 1

    def _draw(self, n, c, p, g):
        return torch.ones(n, c, p)  # RandomGamma(log_gamma=(v, v))

    def _apply(self, u, t):
        gamma = torch.exp(self.level * t).view(*t.shape[:2], 1, 1, 1)
        # sign * |u| ** gamma as TorchIO where u < 0 (after noise); the clamp keeps d/dgamma finite at 0
        return u.sign() * u.abs().clamp(min=1e-12) ** gamma

    def describe(self, t, shape):
        return {"log_gamma": _rounded(self.level * t)}


def symmetric_pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """x padded by `r` on both sides of `dim`, mirrored about the edge (scipy's "reflect")."""
    n = x.shape[dim]
    idx = np.concatenate([np.arange(r)[::-1], np.arange(n), n - 1 - np.arange(r)])
    idx = np.abs(idx) % (2 * n)
    idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
    return x.index_select(dim, torch.as_tensor(idx, device=x.device))


class Blur(Artefact):
    name = "blur"
    deterministic = True

    def per_channel(self, shape) -> int:
        return 3

    def _draw(self, n, c, p, g):
        return torch.ones(n, c, p)  # RandomBlur(std=(v, v)): the level on every axis

    def _apply(self, u, t):
        b, c = u.shape[:2]
        out = u.reshape(1, b * c, *u.shape[2:])
        for axis in range(3):
            # the kernel's radius is fixed by the level (scipy's: 4 sd), so its shape is the same for every t
            r = int(4.0 * self.level / self.spacing[axis] + 0.5)
            if r == 0:
                continue
            sd = (self.level * t[..., axis].abs() / self.spacing[axis]).clamp(min=1e-4).reshape(-1, 1)
            offsets = torch.arange(-r, r + 1, dtype=u.dtype, device=u.device)
            w = torch.exp(-0.5 * (offsets / sd) ** 2)
            w = w / w.sum(1, keepdim=True)
            shape = [b * c, 1, 1, 1, 1]
            shape[2 + axis] = 2 * r + 1
            out = F.conv3d(symmetric_pad(out, r, 2 + axis), w.view(shape), groups=b * c)
        return out.reshape(u.shape)

    def describe(self, t, shape):
        return {"sd_mm": _rounded(self.level * t.abs())}


class Noise(Artefact):
    name = "noise"

    def per_channel(self, shape) -> int:
        return int(np.prod(shape))

    def _draw(self, n, c, p, g):
        return (torch.randn(n, c, p, generator=g) / NOISE_PEAK).clamp(-1, 1)

    def _apply(self, u, t):
        n = NOISE_PEAK * t
        rms = n.pow(2).mean(-1, keepdim=True).sqrt()
        sd = self.level * self.noise_unit.to(u).reshape(-1, u.shape[1], 1)  # `[C]`, or `[B, C]` per instance
        # the RMS is capped at one (in sds): the worst noise has the energy of a random draw at most
        return u + (sd * n / rms.clamp(min=1.0)).view(u.shape)

    def describe(self, t, shape):
        n = NOISE_PEAK * t.view(shape[0], -1)
        rms = n.pow(2).mean(-1).sqrt()
        return {"rms_sd": _rounded(self.level * rms.clamp(max=1.0)),
                "peak_sd": _rounded(self.level * (n.abs().max(-1).values / rms.clamp(min=1.0)))}


def rotation(degrees: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `[..., 3, 3]` of Euler angles `[..., 3]` in degrees, as SimpleITK's
    Euler3DTransform (used by TorchIO's motion) composes them: R = Rz Rx Ry."""
    a = torch.deg2rad(degrees)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c[..., 0]), torch.zeros_like(c[..., 0])

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rx = mat([[one, zero, zero], [zero, c[..., 0], -s[..., 0]], [zero, s[..., 0], c[..., 0]]])
    ry = mat([[c[..., 1], zero, s[..., 1]], [zero, one, zero], [-s[..., 1], zero, c[..., 1]]])
    rz = mat([[c[..., 2], -s[..., 2], zero], [s[..., 2], c[..., 2], zero], [zero, zero, one]])
    return rz @ rx @ ry


# TorchIO moves the image in ITK's LPS world: on the voxel grid of a RAS volume the first two
# axes are flipped, so a rotation R becomes LPS R LPS and a shift T becomes LPS T
LPS = torch.tensor([-1.0, -1.0, 1.0])


class Motion(Artefact):
    name = "motion"
    search = "random"  # its corners beat APGD's gradient at equal cost (docs/benchmarks.md)

    def per_channel(self, shape) -> int:
        return 6 * len(MOTION_TIMES)

    def moved(self, u: torch.Tensor, degrees: torch.Tensor, mm: torch.Tensor) -> torch.Tensor:
        """u `[N, X, Y, Z]` rotated by `degrees` `[N, 3]` about the volume's centre and shifted by
        `mm` `[N, 3]`, trilinear, air (0) beyond half a voxel outside."""
        shape = u.shape[1:]
        sp = torch.as_tensor(self.spacing, dtype=u.dtype, device=u.device)
        flip = LPS.to(u)
        grids = torch.meshgrid(*[torch.arange(n, dtype=u.dtype, device=u.device) for n in shape], indexing="ij")
        centre = torch.as_tensor([(n - 1) / 2 for n in shape], dtype=u.dtype, device=u.device)
        p = (torch.stack(grids, -1) - centre) * sp  # mm from the centre, [X, Y, Z, 3]
        r = flip.view(3, 1) * rotation(degrees) * flip.view(1, 3)
        src = torch.einsum("nij,xyzj->nxyzi", r, p) + (flip * mm).view(-1, 1, 1, 1, 3)
        last = torch.as_tensor([max(n - 1, 1) for n in shape], dtype=u.dtype, device=u.device)
        index = src / sp + centre
        grid = (2 * index / last - 1).flip(-1)  # align_corners=True coordinates; grid_sample's order is (Z, Y, X)
        out = F.grid_sample(u.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=True)
        # as ITK's linear interpolator: the border voxel's value up to half a voxel outside, air beyond
        size = torch.as_tensor(shape, dtype=u.dtype, device=u.device)
        inside = ((index >= -0.5) & (index <= size - 0.5)).all(-1)
        return out.squeeze(1) * inside

    def _apply(self, u, t):
        if self.level == 0:
            return u  # exactly: the FFTs' round trip would differ from u in the last bits
        b, c = u.shape[:2]
        flat = u.reshape(b * c, *u.shape[2:])
        moves = (self.level * t).reshape(b * c, len(MOTION_TIMES), 6)
        images = [flat] + [self.moved(flat, moves[:, k, :3], moves[:, k, 3:]) for k in range(len(MOTION_TIMES))]
        spectra = [torch.fft.fftshift(torch.fft.fftn(im, dim=(1, 2, 3)), dim=(1, 2, 3)) for im in images]
        # as TorchIO: the unmoved image fills the band that holds k-space's centre
        centre = next((i for i, tm in enumerate(MOTION_TIMES) if tm > 0.5), len(MOTION_TIMES))
        spectra[0], spectra[centre] = spectra[centre], spectra[0]
        last = flat.shape[-1]
        edges = [0, *[int(last * tm) for tm in MOTION_TIMES], last]
        k = torch.cat([s[..., a:e] for s, a, e in zip(spectra, edges, edges[1:])], -1)
        return torch.fft.ifftn(torch.fft.ifftshift(k, dim=(1, 2, 3)), dim=(1, 2, 3)).real.reshape(u.shape)

    def describe(self, t, shape):
        m = (self.level * t).view(shape[0], len(MOTION_TIMES), 6)
        return {"degrees": _rounded(m[..., :3].abs().amax((1, 2))), "mm": _rounded(m[..., 3:].abs().amax((1, 2)))}


MODELS = {m.name: m for m in (Bias, Gamma, Blur, Noise, Motion)}
CHAIN_ORDER = ("motion", "bias", "blur", "noise", "gamma")  # the object moves, the coil, the PSF, noise, display


class Chain(Artefact):
    """Every artefact of `CHAIN_ORDER` at the same severity, each within its own bound."""

    name = "chain"

    def __init__(self, parts: list[Artefact]):
        super().__init__(0.0, parts[0].spacing, parts[0].noise_unit)
        self.parts = parts

    def per_channel(self, shape) -> int:
        return sum(p.per_channel(shape) for p in self.parts)

    def _split(self, t: torch.Tensor, shape) -> list[torch.Tensor]:
        return list(t.split([p.per_channel(shape) for p in self.parts], dim=-1))

    def _apply(self, u, t):
        for part, tp in zip(self.parts, self._split(t, u.shape[2:])):
            u = part._apply(u, tp)
        return u

    def draw(self, n, shape, generator):
        return torch.cat([p._draw(n, shape[0], p.per_channel(shape[1:]), generator) for p in self.parts],
                         -1).reshape(n, -1)

    def describe(self, t, shape):
        parts = self._split(t.view(shape[0], -1), shape[1:])
        return {f"{p.name}.{k}": v for p, tp in zip(self.parts, parts)
                for k, v in p.describe(tp.flatten(), shape).items()}


ARTEFACTS = (*MODELS, "chain")


def make_artefact(name: str, severity: int, spacing, noise_unit: torch.Tensor) -> Artefact:
    """An artefact of `rog.corruptions`' severity scale as a differentiable map.

    Args:
        name: one of `ARTEFACTS` (bias, gamma, blur, noise, motion, chain).
        severity: 0 (the identity) to 5; the physical level is `rog.corruptions`' at it.
        spacing: mm per voxel axis of the volumes it will corrupt.
        noise_unit: the foreground intensity sd in range units, `[C]` (or `[B, C]`).

    Returns:
        The `Artefact`: `artefact(u, t)` maps range-normalised u `[B, C, X, Y, Z]` and
        parameters t `[B, P]` in [-1, 1] to the corrupted u; `draw`, `size`, `describe`.

    >>> import torch
    >>> bias = make_artefact("bias", 3, (1.0, 1.0, 1.0), torch.tensor([0.1]))
    >>> bias.size((1, 8, 8, 8)), bias.level
    (20, 0.3)
    >>> u = torch.rand(1, 1, 8, 8, 8)
    >>> torch.equal(make_artefact("bias", 0, (1.0, 1.0, 1.0), torch.tensor([0.1]))(u, torch.ones(1, 20)), u)
    True
    """
    if name == "chain":
        return Chain([make_artefact(n, severity, spacing, noise_unit) for n in CHAIN_ORDER])
    if name not in MODELS:
        raise ValueError(f"unknown artefact {name!r}; choose from {list(ARTEFACTS)}")
    return MODELS[name](CORRUPTIONS[name].level(severity), spacing, noise_unit)


def expand(names: list[str]) -> list[str]:
    """Artefact names, "all" for every one; an unknown name is a ValueError naming it."""
    return expand_names(names, ARTEFACTS, "artefact")

