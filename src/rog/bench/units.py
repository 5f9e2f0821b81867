"""The threat's radius in the units a user measures a scan in, turned into the attacks' own.

The attacks take eps on the /255 scale of each channel's per-case range (`ThreatModel`, the
paper's and AutoAttack's convention). On a CT of range [-1024, 3071] HU, 8/255 is 128 HU, and
on a multi-modal MR every modality gets the same share of its range; so a benchmark's eps may
be given in other units (`UNITS`), converted here per case and channel:

- "range": as the attacks take it (the default);
- "hu": Hounsfield units of the scan, for CT channels: the case says how many model-input
  units one HU is (`BenchCase.hu`: 1/std of rog's CT normalisation on the preprocessed grid,
  1 on a CT scan as stored);
- "sd": standard deviations of the channel's intensities over the case's labelled voxels
  (the tissue contrast of an MR), measured on the attacked input itself.

`--eps-channels` scales each channel's radius (0 leaves that channel untouched). Where the
channels end up with different radii, the threat is one per channel (`ThreatModel.per_channel`).
"""
from __future__ import annotations

import torch

from rog.bench.cases import BenchCase
from rog.bench.records import BenchError
from rog.results import EPS_UNITS as UNITS



def input_units(case: BenchCase, unit: str) -> torch.Tensor:
    """Model-input units per one `unit` ("hu" or "sd") for each channel of `case`, `[C]`
    (float64); "range" needs none (`range_eps`).

    Raises:
        BenchError: a unit the case cannot be measured in (a channel not in HU, a channel
            constant over the labelled voxels), naming the case and channel.
    """
    c = case.x.shape[1]
    if unit == "hu":
        hu = case.hu or [None] * c
        missing = [i for i, v in enumerate(hu) if v is None]
        if missing:
            raise BenchError(f"--eps-unit hu: case {case.name}: channel(s) {missing} are not known to be in Hounsfield "
                             "units (a CT channel of a rog plan, or a CT channel named so by the model's dataset.json)")
        return torch.tensor(hu, dtype=torch.float64)
    if unit == "sd":
        x = case.x[0].detach().double().cpu().flatten(1)
        labelled = (case.y[0] > 0).flatten().cpu()
        sd = (x[:, labelled] if bool(labelled.any()) else x).std(dim=1)
        flat = [i for i, v in enumerate(sd.tolist()) if not v > 0]
        if flat:
            raise BenchError(f"--eps-unit sd: case {case.name}: channel(s) {flat} are constant over the labelled "
                             "voxels, so a standard deviation is no unit there")
        return sd
    raise BenchError(f"--eps-unit: unknown unit {unit!r}: one of {', '.join(u for u in UNITS if u != 'range')}")


def range_eps(case: BenchCase, eps: float, unit: str, channels: list[float] | None = None) -> float | torch.Tensor:
    """The radius of `eps` (in `unit`, scaled per channel by `channels`) on the /255 scale of
    each channel's range of `case`, as `ThreatModel` takes it: a float where every channel gets
    the same, else `[1, C, 1, 1, 1]` (float32).

    Raises:
        BenchError: `channels` not one value per channel, or `input_units`' errors.
    """
    c = case.x.shape[1]
    weights = torch.ones(c, dtype=torch.float64) if channels is None else torch.tensor(channels, dtype=torch.float64)
    if weights.numel() != c:
        raise BenchError(f"--eps-channels {channels}: {weights.numel()} value(s) for {c} input channel(s) "
                         f"(case {case.name})")
    if unit == "range":  # exactly the numbers given, not a round trip through the range
        per_channel = eps * weights
    else:
        span = (case.hi - case.lo).flatten().double().cpu().clamp(min=1e-12)
        per_channel = eps * weights * input_units(case, unit) / span * 255.0
    if bool((per_channel == per_channel[0]).all()):
        return float(per_channel[0])
    return per_channel.float().view(1, c, 1, 1, 1)
