"""rog's own inference of one scan (`rog predict` without post-processing) as one
differentiable function of the scan's voxels: the threat on the scan as stored for rog's runs.

`RogScan(model, geometry, plan)` maps the image as rog reads it, x `[1, C, *shape]` (raw
intensities, the file's voxel order), to `[1, K, *shape]` on the same grid, doing what
`rog.infer.predictor.predict_case` does, in its order: voxel axes in world order, crop to the
non-zero box, resample to the plan's spacing (scipy's cubic `zoom`, slice by slice and nearest
through-plane on anisotropic cases), normalise (CT clip and z-score with the plan's constants,
or z-score over the non-zero voxels), the sliding window (`model`), softmax, the probabilities
resampled linearly to the cropped region, background outside it, axes back to the file's
order. It returns the log of those probabilities (their softmax gives them back, so the argmax
is `predict_case`'s label map). The box, the non-zero mask and the shapes are recomputed from x
on every call (steps in x: no gradient), the statistics differentiably.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rog.data.fingerprint import nonzero_bbox
from rog.data.io import Geometry, canonical_axes
from rog.data.preprocess import through_plane_axis
from rog.infer.resample import Resampling
from rog.plan import Plan


def uncrop(t: torch.Tensor, box: tuple[slice, ...], shape, fill) -> torch.Tensor:
    """`t` `[1, K, *box]` put back where `box` was cut from a volume of spatial `shape`, with
    `fill[k]` for class k everywhere else: `[1, K, *shape]`, differentiable in `t`."""
    outside = torch.tensor(fill, dtype=t.dtype, device=t.device).view(1, -1, 1, 1, 1)
    pad = [p for b, n in zip(box[::-1], tuple(shape)[::-1]) for p in (b.start, n - b.stop)]
    return F.pad(t - outside, pad) + outside


def _normalise(x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """`rog.data.preprocess.normalize` of `[1, C, ...]` (the resampled case), in torch."""
    out = []
    for c, norm in enumerate(plan.normalization):
        v = x[:, c]
        if norm["scheme"] == "ct":
            out.append((v.clamp(norm["lower"], norm["upper"]) - float(norm["mean"])) / max(float(norm["std"]), 1e-8))
            continue
        mask = (v != 0).detach()
        values = v[mask] if mask.any() else v.flatten()
        out.append((v - values.mean()) / values.std(correction=0).clamp(min=1e-8))
    return torch.stack(out, 1)


class RogScan(nn.Module):
    """rog's inference of one scan around a whole-volume `model` (logits on the plan's grid):
    x `[1, C, *shape]` -> log-probabilities `[1, K, *shape]` (the module's note); `geometry`:
    the scan's, `plan`: the run's."""

    def __init__(self, model: nn.Module, geometry: Geometry, plan: Plan):
        super().__init__()
        self.model, self.plan = model, plan
        self.axes = canonical_axes(geometry)
        self.spacing = np.array(geometry.spacing, float)[list(self.axes)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 1, *[2 + a for a in self.axes])
        box = tuple(slice(lo, hi) for lo, hi in nonzero_bbox(x[0].detach().cpu().numpy()))  # as preprocessing
        crop = x[(slice(None), slice(None), *box)]
        shape = tuple(crop.shape[2:])
        target = np.array(self.plan.target_spacing, float)
        new = tuple(max(int(round(n * s / t)), 1) for n, s, t in zip(shape, self.spacing, target))
        axis = through_plane_axis(self.spacing, target)
        z = _normalise(Resampling(shape, new, 3, axis, 0, engine="zoom")(crop), self.plan)
        logits = self.model(z)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # softmax in float32 at least
        probs = F.interpolate(logits.softmax(1), size=shape, mode="trilinear", align_corners=False)
        # background outside the box, as `invert_probabilities`
        full = uncrop(probs, box, x.shape[2:], [1.0] + [0.0] * (probs.shape[1] - 1))
        full = full.clamp_min(torch.finfo(full.dtype).tiny).log()
        return full.permute(0, 1, *[2 + int(a) for a in np.argsort(self.axes)])
