"""nnU-Net's inference on one scan as one differentiable function of the scan's voxels.

`ScanPipeline(model, spacing, deployment, post)` maps the raw image as nnU-Net's reader gives
it, x `[1, C, *shape]`, to logits `[1, K, *shape]` in the same geometry, doing what nnU-Net's
predictor does, in its order: transpose, crop to the non-zero box, normalise (CT clip and
z-score, or z-score inside the non-zero mask), resample to the configuration's spacing, the
sliding window (`model`), resample the logits back, put them into the uncropped volume
(background outside the box, as nnU-Net's `revert_cropping_on_probabilities`), transpose back;
then, where `post` is given, nnU-Net's post-processing (`rog.external.nnunet_post`).
Every constant nnU-Net computes from the case is computed from x on every call: the
normalisation's mean and std (differentiable), the non-zero mask and its box (piecewise
constant in x: recomputed, no gradient, as for any mask), the resampled shape. So a
perturbed scan goes through exactly what the deployed tool would run on it, and eps and the
Dice live on the scan as stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rog.infer.resample import nnunet_resampling
from rog.infer.scan import uncrop
from rog.infer.sliding_window import straight_through

SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization")
# the foreground logits outside the crop box: softmax gives background 1 to float precision,
# nnU-Net's probabilities there, while the loss terms of those voxels stay finite and constant
OUTSIDE = -100.0


@dataclass(frozen=True)
class ChannelNorm:
    """One channel's normalisation: `scheme` of `SCHEMES`; `masked`: z-score statistics over
    the non-zero mask, voxels outside it left as they are (0); CT's `mean`, `std`, clip `lo`/`hi`."""

    scheme: str
    masked: bool = False
    mean: float = 0.0
    std: float = 1.0
    lo: float = -np.inf
    hi: float = np.inf

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x `[B, *spatial]` one channel of the cropped case, mask `[*spatial]` bool."""
        if self.scheme == "NoNormalization":
            return x
        if self.scheme == "CTNormalization":
            return (x.clamp(self.lo, self.hi) - self.mean) / max(self.std, 1e-8)
        v = x[:, mask] if self.masked else x.flatten(1)
        mean, std = v.mean(1), v.std(1, correction=0).clamp(min=1e-8)
        z = (x - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)
        return torch.where(mask, z, x) if self.masked else z


@dataclass(frozen=True)
class Deployment:
    """What nnU-Net's predictor does to every case of one configuration: axis order
    (`transpose_forward`), per-channel normalisation, the network's spacing (in transposed
    order), and the configured resampling of images and of logits (function name, kwargs)."""

    transpose: tuple[int, ...]
    norms: tuple[ChannelNorm, ...]
    spacing: tuple[float, ...]
    data: tuple[str, dict]
    logits: tuple[str, dict]
    segmentation: tuple[str | None, dict] = (None, {})  # the resampling of a cascade's previous stage
    foreground: tuple[int, ...] = ()  # the labels a cascade's previous stage feeds as one-hot channels
    regions: tuple[int, ...] = ()  # a region-based model's regions_class_order (empty: softmax over labels)

    @classmethod
    def of(cls, plans, configuration, foreground=(), regions=()) -> "Deployment":
        """From nnU-Net's `PlansManager` and `ConfigurationManager` (`foreground`: the label
        manager's foreground labels, for a cascade's stage; `regions`: its regions_class_order,
        for a region-based model); ValueError for what it cannot run."""
        conf = configuration.configuration
        intensity = plans.foreground_intensity_properties_per_channel
        norms = []
        for c, scheme in enumerate(configuration.normalization_schemes):
            if scheme not in SCHEMES:
                raise ValueError(f"normalisation {scheme}: not supported (supported: {', '.join(SCHEMES)})")
            p = intensity.get(str(c), {}) if scheme == "CTNormalization" else {}
            norms.append(ChannelNorm(scheme, bool(configuration.use_mask_for_norm[c]) and scheme == SCHEMES[0],
                                     p.get("mean", 0.0), p.get("std", 1.0), p.get("percentile_00_5", -np.inf),
                                     p.get("percentile_99_5", np.inf)))
        keys = ["resampling_fn_data", "resampling_fn_probabilities"]
        if configuration.previous_stage_name:
            keys.append("resampling_fn_seg")
        for key in keys:  # refused at load, not mid-benchmark (a label map's resampling checked as the linear
            # one its gradient takes)
            kwargs = {**conf[f"{key}_kwargs"], "is_seg": False} if key == "resampling_fn_seg" else conf[f"{key}_kwargs"]
            nnunet_resampling(conf[key], kwargs, (2, 2, 2), (3, 3, 3), (1, 1, 1), (1, 1, 1))
        return cls(tuple(plans.transpose_forward), tuple(norms), tuple(float(s) for s in configuration.spacing),
                   (conf["resampling_fn_data"], conf["resampling_fn_data_kwargs"]),
                   (conf["resampling_fn_probabilities"], conf["resampling_fn_probabilities_kwargs"]),
                   (conf.get("resampling_fn_seg"), conf.get("resampling_fn_seg_kwargs", {})),
                   tuple(int(k) for k in foreground) if configuration.previous_stage_name else (),
                   tuple(int(k) for k in regions))

    def crop_box(self, x: torch.Tensor) -> tuple[tuple[slice, ...], torch.Tensor]:
        """nnU-Net's `crop_to_nonzero` of the transposed case x `[1, C, *shape]`: (the box's
        slices, the hole-filled non-zero mask inside it `[*box]`)."""
        from acvl_utils.cropping_and_padding.bounding_boxes import get_bbox_from_mask
        from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask
        mask = create_nonzero_mask(x[0].detach().cpu().numpy())  # nnU-Net's own: non-zero, holes filled
        box = tuple(slice(lo, hi) for lo, hi in get_bbox_from_mask(mask))
        return box, torch.from_numpy(np.ascontiguousarray(mask[box])).to(x.device)


def label_scores(regions: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """A region-based model's logits r `[B, R, ...]` (one sigmoid per region, in nnU-Net's
    region order) -> scores of the labels `[B, 1 + R, ...]` whose argmax is nnU-Net's label
    map: label `order[i]` where region i is the last one on (r_i > 0), else 0. The score of
    `order[i]` is min(r_i, -r_j for j > i), of 0 min(-r_j for all j): exactly one is positive
    wherever no logit is 0, and the scores are continuous and piecewise linear in r, so the
    attacks' losses and gradients act on the label map nnU-Net writes. `order` must be a
    permutation of 1..R (`load_nnunet` refuses other orders)."""
    off = -regions
    # later[:, i] = min over j > i of -r_j (+inf for the last region)
    later = torch.cat([off[:, 1:].flip(1).cummin(1).values.flip(1), torch.full_like(off[:, :1], float("inf"))], 1)
    scores = torch.minimum(regions, later)
    return torch.cat([off.amin(1, keepdim=True), scores[:, [order.index(c) for c in range(1, len(order) + 1)]]], 1)


class ScanPipeline(nn.Module):
    """nnU-Net's inference of one case around a whole-volume `model` (logits on the network's
    grid), as a function x `[1, C, *shape]` -> logits `[1, K, *shape]` (the module's note);
    `spacing`: the case's voxel size in mm in the reader's axis order. `previous`: a cascade's
    previous stage, the same function of x, whose segmentation the network takes as one-hot
    channels after the image's (`_previous_stage`)."""

    def __init__(self, model: nn.Module, spacing, deployment: Deployment, post=None, previous: nn.Module | None = None):
        super().__init__()
        self.model, self.deployment, self.post, self.previous = model, deployment, post, previous
        self.spacing = [float(spacing[a]) for a in deployment.transpose]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
        d = self.deployment
        scan = x
        x = x.permute(0, 1, *[2 + a for a in d.transpose])
        box, mask = d.crop_box(x)
        crop = x[(slice(None), slice(None), *box)]
        shape = tuple(crop.shape[2:])
        # a 2d configuration's spacing is in-plane: the slices keep the case's own
        target = d.spacing if len(d.spacing) == len(shape) else (self.spacing[0], *d.spacing)
        new = tuple(int(s) for s in compute_new_shape(shape, self.spacing, target))
        if self.previous is not None:
            channels, labels = self._previous_stage(scan, box, mask, shape, new, target)
            mask = labels[0] >= 0  # nnU-Net normalises inside seg >= 0: the mask and the previous stage's foreground
        z = torch.stack([norm(crop[:, c], mask) for c, norm in enumerate(d.norms)], 1)
        z = nnunet_resampling(*d.data, shape, new, self.spacing, target)(z)
        if self.previous is not None:
            z = torch.cat([z, channels.to(z.dtype)], 1)
        logits = self.model(z)
        logits = nnunet_resampling(*d.logits, new, shape, target, self.spacing)(logits)
        # outside the box nnU-Net's probabilities are background 1 (softmax) or every region 0 (sigmoid)
        fill = [OUTSIDE] * logits.shape[1] if d.regions else [0.0] + [OUTSIDE] * (logits.shape[1] - 1)
        full = uncrop(logits, box, x.shape[2:], fill)
        full = full.permute(0, 1, *[2 + int(a) for a in np.argsort(d.transpose)])
        if d.regions:
            full = label_scores(full, d.regions)
        return full if self.post is None else self.post(full)

    def _previous_stage(self, scan: torch.Tensor, box, mask: torch.Tensor, shape, new, target):
        """The previous stage's segmentation of `scan` as nnU-Net's preprocessor hands it to
        this stage: transposed, cropped to `box` (background outside the non-zero `mask` set
        to -1), resampled to `new` by nnU-Net's own label resampling, one-hot over the
        foreground labels: (channels `[1, L, *new]`, the cropped labels `[1, *shape]`). The
        label map is a step function of the scan: the channels' gradient is that of the
        previous stage's probabilities resampled linearly (`straight_through`)."""
        from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
        d = self.deployment
        logits = self.previous(scan).permute(0, 1, *[2 + a for a in d.transpose])[(slice(None), slice(None), *box)]
        labels = logits.detach().argmax(1)
        labels = torch.where((labels == 0) & ~mask, -1, labels)
        name, kwargs = d.segmentation
        exact = resample_data_or_seg_to_shape(labels.cpu().numpy(), new, self.spacing, target, **kwargs)
        onehot = torch.from_numpy(np.stack([exact[0] == k for k in d.foreground])[None]).to(logits)
        linear = nnunet_resampling(name, {**kwargs, "is_seg": False}, shape, new, self.spacing, target)
        probabilities = logits.softmax(1)[:, list(d.foreground)]
        return straight_through(linear(probabilities), onehot), labels
