"""The threat model: an eps-ball on each channel's intensity range, and that range as the box.

eps is given on the /255 scale: for instance i and channel c with input range [lo, hi]
(the channel's min and max over the whole preprocessed case), the L-inf radius is
eps / 255 * (hi - lo) and the box is [lo, hi]. This is the analogue of an 8-bit image in
[0, 1] with eps = 8/255, and it is what the public code's clamp to [0, 1] on z-scored inputs
got wrong. Internally attacks work in range-normalised coordinates u = (x - lo) / (hi - lo),
where the box is [0, 1] and the L-inf radius is eps / 255, exactly as in classification.

A channel may have its own radius (an L-inf eps per channel, `[1, C, 1, 1, 1]`: a threat in
Hounsfield units or tissue standard deviations, `rog.bench.units`, or one modality left
untouched). The attacks then step along `shape` times the sign of the gradient, `shape` each
channel's radius over the instance's largest (`peak`), so that every step and projection
respects each channel's own ball and a channel of radius 0 never moves.
"""
from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass

import torch


@dataclass(frozen=True)
class ThreatModel:
    """`eps` on the /255 scale of each channel's range (`ThreatModel(8)` is AutoAttack's
    8/255; a number in (0, 1) is refused: it is almost always 8/255 typed as a fraction, which
    would mean 0.03/255 here; `ThreatModel.of_range(8 / 255)` takes the fraction); `norm`
    "linf" (or "l2", where eps/255 bounds the L2 norm of the range-normalised perturbation
    divided by sqrt(#voxels)). A tensor eps broadcastable to `[B, C, 1, 1, 1]` gives each
    instance and channel its own (adversarial training: the whole case's radius on an
    augmented patch's wider box).

    >>> ThreatModel(8).radius == 8 / 255
    True
    >>> ThreatModel.of_range(8 / 255).eps
    8.0
    >>> ThreatModel(8 / 255)
    Traceback (most recent call last):
    ValueError: eps=0.0313725 is on the /255 scale, so it would mean 0.0313725/255 of the range: for 8/255 give ThreatModel(8); for a fraction of the range ThreatModel.of_range(0.0313725)
    """

    eps: float | torch.Tensor
    norm: str = "linf"
    exact: InitVar[bool] = False  # take an eps in (0, 1) as given (`exactly`)

    def __post_init__(self, exact: bool):
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"unknown norm {self.norm!r}: 'linf' or 'l2'")
        if bool(torch.as_tensor(self.eps).lt(0).any()):
            raise ValueError("eps must be >= 0")
        if torch.is_tensor(self.eps) and self.norm != "linf":
            raise ValueError("a radius per channel or instance is an L-inf threat; the L2 ball has one radius")
        if not torch.is_tensor(self.eps) and 0 < self.eps < 1 and not exact:
            raise ValueError(f"eps={self.eps:g} is on the /255 scale, so it would mean {self.eps:g}/255 of the "
                             f"range: for 8/255 give ThreatModel(8); for a fraction of the range "
                             f"ThreatModel.of_range({self.eps:g})")

    @classmethod
    def exactly(cls, eps: float, norm: str = "linf") -> "ThreatModel":
        """eps on the /255 scale taken as given, below 1 too (0.5: half of 1/255 of the range,
        8 HU on a 4000 HU CT range): for callers that asked for it knowingly."""
        return cls(eps, norm, exact=True)

    @classmethod
    def of_range(cls, fraction: float, norm: str = "linf") -> "ThreatModel":
        """The threat model of radius `fraction` of each channel's range (AutoAttack's and
        torchattacks' convention: 8/255 = 0.0314), any size."""
        return cls.exactly(float(fraction) * 255.0, norm)

    @property
    def radius(self) -> float | torch.Tensor:
        """Radius in range-normalised units (a tensor like `eps` where eps is one)."""
        return self.eps / 255.0

    def radius_like(self, u: torch.Tensor) -> float | torch.Tensor:
        """`radius` on u's device and dtype, where it is a tensor."""
        return self.radius.to(u) if self.per_channel else self.radius

    @property
    def per_channel(self) -> bool:
        """Whether channels or instances have radii of their own (`eps` a tensor)."""
        return torch.is_tensor(self.eps)

    @property
    def peak(self) -> float | torch.Tensor:
        """Each instance's largest radius, range-normalised: a float, or `[B]` (or `[1]`) where
        eps is a tensor: the unit of the attacks' step sizes."""
        if not self.per_channel:
            return self.radius
        return self.radius.flatten(1).amax(1) if self.radius.ndim > 1 else self.radius.amax().view(1)

    @property
    def shape(self) -> float | torch.Tensor:
        """Each channel's radius over its instance's `peak` (1.0 for one radius), broadcastable
        to the points: a step of size s moves channel c by s * shape_c."""
        if not self.per_channel:
            return 1.0
        peak = self.peak.view(-1, *[1] * (self.radius.ndim - 1)) if self.radius.ndim > 1 else self.peak
        return self.radius / peak.clamp(min=1e-30)

    def to_dict(self, eps: list[float] | None = None) -> dict:
        """The threat model for result files; `eps`: every radius of a sweep, instead of this one's."""
        return {**asdict(self), **({"eps": eps} if eps is not None else {}),
                "scale": "/255 of each channel's per-case intensity range", "box": "per-case channel [min, max]"}

    @staticmethod
    def channel_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-instance, per-channel (lo, hi), each `[B, C, 1, 1, 1]`, from `x: [B, C, ...]`."""
        flat = x.detach().flatten(2)
        shape = (*x.shape[:2], *([1] * (x.ndim - 2)))
        return flat.min(-1).values.view(shape), flat.max(-1).values.view(shape)

    def radius_of(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """L-inf radius in input units per channel, `[B, C, 1, ...]`, for the box [lo, hi]."""
        return self.radius_like(lo) * (hi - lo)

    def project(self, u: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
        """Project range-normalised `u` onto the ball around `u0` and the box [0, 1]."""
        d = u - u0
        if self.norm == "linf":
            r = self.radius_like(d)
            d = d.clamp(-r, r)
        else:
            limit = self.radius * d[0].numel() ** 0.5
            n = d.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (d.ndim - 1)))
            d = d * torch.clamp(limit / n, max=1.0)
        return (u0 + d).clamp(0.0, 1.0)

    def norm_of(self, u: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
        """Perturbation size per instance `[B]` on the /255 scale (the unit eps is given in)."""
        d = (u - u0).flatten(1)
        if self.norm == "linf":
            return d.abs().max(1).values * 255.0
        return d.norm(dim=1) / d.shape[1] ** 0.5 * 255.0
