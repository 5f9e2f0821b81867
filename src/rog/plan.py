"""The Plan: every per-task setting in one editable JSON file, and the planner that makes it.

The planner implements the paper's auto-configuration (REFERENCE section 2) from the
fingerprint: number of downsamplings from the smallest structure's volume, per-axis patch
sizes and strides from the median shape and the smallest structure's bounding box, and two
memory constraints on the coarsest feature map. Defects of the public code are fixed:
- an axis is never given fewer than 2 downsamplings (the last two lattice levels always
  halve, so fewer would silently mismatch; a stride count of 0 made every stride 2);
- the smallest class's bounding box is the mean over all its components and cases, and a
  class missing from some cases is skipped there rather than crashing (see fingerprint);
- validation patches are rounded up to a multiple of the network's total stride.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rog.atomic import write_json
from rog.errors import RogError, read_json_object, refuse_unknown_keys

LESION_WORDS = ("tumour", "tumor", "lesion", "cancer", "nodule", "mass", "edema", "oedema")
VOXEL_BUDGET = 2 ** 22  # batch size = budget / patch voxels, clipped to [2, 24]


class PlanError(RogError):
    """plan.json is missing, malformed or inconsistent; the message names the file and key."""


def class_kind(name: str) -> str:
    """'lesion' when the class name mentions a lesion-like word, else 'organ'."""
    return "lesion" if any(w in name.lower() for w in LESION_WORDS) else "organ"


@dataclass
class Plan:
    """Per-task configuration. Spatial lists are per world axis (x, y, z): the voxel order
    preprocessing puts every case in (`data.io.canonical_axes`), the files' own for most."""

    dataset: str
    modalities: list[str]
    labels: dict[str, str]  # "0" -> "background", ...
    class_kinds: dict[str, str]  # foreground class name -> "organ" | "lesion"
    target_spacing: list[float]
    normalization: list[dict]  # per channel: scheme "ct" (mean, std, lower, upper) or "zscore"
    patch_size: list[int]  # training patch entering the network
    crop_size: list[int]  # patch cropped before augmentation (patch + margin)
    val_patch_size: list[int]  # sliding-window patch at validation/test time
    strides: list[list[int]]  # [s0, s1, s2], each a per-axis triple
    num_downsamplings: int
    batch_size: int
    median_shape: list[float]
    mean_object_voxels: dict[str, float] = field(default_factory=dict)  # class index -> mean component size
    model: str = "rog"
    width: int = 64
    num_scales: int = 4
    lattice_length: int = 2
    ignore_label: int | None = None  # nnU-Net's ignore label (= num_classes): voxels no loss or metric counts

    @property
    def num_channels(self) -> int:
        return len(self.modalities)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> list[str]:
        """Foreground class names, label 1 first ("class K" where the labels name none)."""
        return [self.labels.get(str(k), f"class {k}") for k in range(1, self.num_classes)]

    @property
    def total_stride(self) -> list[int]:
        """Per-axis product of all downsamplings of the network (input size must divide by it)."""
        extra = 2 ** (self.num_scales - 2)
        return [int(np.prod([s[a] for s in self.strides])) * extra for a in range(3)]

    def preprocessing(self) -> dict:
        """The fields that shape a preprocessed case (recorded in each one, so that a case
        made under another plan is never used as if it were this plan's)."""
        return {"modalities": list(self.modalities), "target_spacing": [float(v) for v in self.target_spacing],
                "normalization": self.normalization}

    def changes(self, old: "Plan") -> list[str]:
        """'field old -> new' for each field this plan sets differently from `old`."""
        new, was = asdict(self), asdict(old)
        return [f"{k} {was[k]} -> {v}" for k, v in new.items() if was[k] != v]

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"{path}: plan not found (run `rog plan` first)")
        raw = read_json_object(path, PlanError)
        refuse_unknown_keys(raw, cls, str(path), PlanError)
        try:
            plan = cls(**raw)
        except TypeError as e:
            raise PlanError(f"{path}: {e}") from e
        plan.validate(str(path))
        return plan

    def validate(self, where: str = "plan") -> None:
        for key in ("patch_size", "crop_size", "val_patch_size", "target_spacing"):
            v = getattr(self, key)
            if len(v) != 3 or any(x <= 0 for x in v):
                raise PlanError(f"{where}: {key} must be 3 positive numbers, got {v}")
        if len(self.strides) != 3 or any(len(s) != 3 or any(x not in (1, 2) for x in s) for s in self.strides):
            raise PlanError(f"{where}: strides must be three per-axis triples of 1 or 2, got {self.strides}")
        for key in ("patch_size", "val_patch_size"):
            bad = [a for a, (p, t) in enumerate(zip(getattr(self, key), self.total_stride)) if p % t]
            if bad:
                raise PlanError(f"{where}: {key} {getattr(self, key)} not divisible by the total "
                                f"stride {self.total_stride} on axis {bad}")
        if len(self.normalization) != self.num_channels:
            raise PlanError(f"{where}: {len(self.normalization)} normalisation entries for "
                            f"{self.num_channels} channels")

    def table(self) -> str:
        rows = [
            ("dataset", self.dataset), ("channels", ", ".join(self.modalities)),
            ("classes", ", ".join(f"{k}:{v}" for k, v in self.labels.items())),
            ("class kinds", ", ".join(f"{k}={v}" for k, v in self.class_kinds.items())),
            ("target spacing", " x ".join(f"{s:.3g}" for s in self.target_spacing)),
            ("median shape", " x ".join(f"{s:.0f}" for s in self.median_shape)),
            ("patch", "x".join(map(str, self.patch_size))), ("crop", "x".join(map(str, self.crop_size))),
            ("val patch", "x".join(map(str, self.val_patch_size))),
            ("strides s0/s1/s2", " / ".join(str(tuple(s)) for s in self.strides)),
            ("downsamplings", self.num_downsamplings), ("batch size", self.batch_size),
            ("model", f"{self.model} (width {self.width}, {self.num_scales} scales, L={self.lattice_length})"),
            ("normalisation", "; ".join(f"{n['scheme']}" for n in self.normalization)),
        ]
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def _axis_sizes(i: float, small: float, nd: int, max_pow: int):
    """Patch, crop, validation patch and stride count for one axis (REFERENCE section 2)."""
    i_big = i
    if i > 128:
        i *= 0.7
    power_t = max(min(int(math.log2(max(i, 1))), max_pow), 4)  # >= 16: room for 2 downsamplings
    power_v = max(min(int(math.log2(max(i, 1))), 7), 4)
    sz_t, sz_v = 2 ** power_t, 2 ** power_v
    k = min(int(math.log2(max(small, 1))), nd, power_t - 2)
    k = max(k, 2)  # the last two lattice levels always halve
    if sz_t * 1.5 < i and not (nd == 5 and sz_t / 2 ** k >= 8):
        sz_t = int(sz_t * 1.5)
    if sz_v * 1.5 < i:
        sz_v = int(sz_v * 1.5)
    crop = sz_t + 20 if sz_t + 20 < i else sz_t
    val = max(int(i_big // 2), sz_v)
    return sz_t, crop, val, k


def plan_sizes(median_shape, small_bbox, small_volume: float) -> dict:
    """Patch sizes and strides from dataset statistics (all in voxels at the target spacing).

    Returns dict with patch_size, crop_size, val_patch_size, strides ([s0, s1, s2]) and
    num_downsamplings. Example (MSD Hippocampus): median 35x50x36, bbox 19x23x20, volume
    1580 -> patch 32x48x32, strides (1,1,1)/(1,1,1)/(2,2,2).
    """
    def sizes(nd: int, max_pow: int = 7):
        axes = [_axis_sizes(i, j, nd, max_pow) for i, j in zip(median_shape, small_bbox)]
        last = float(np.prod([a[0] / 2 ** a[3] for a in axes]))
        return axes, last

    nd = 4 if small_volume < 32 ** 3 else 5
    axes, last = sizes(nd)
    if last >= 12 * 12 * 6:  # memory constraint 1: coarsest map too big -> 5 downsamplings
        nd = 5
        axes, last = sizes(nd)
    if last >= 12 * 12 * 4:  # memory constraint 2: still too big -> cap the patch at 64
        axes, last = sizes(nd, 6)
    # per axis: ones first, then the k twos; nd = 4 gets a leading (1,1,1) so there are always
    # five positions: s0, s1, s2 reach the model, the last two are the lattice's fixed halvings
    per_axis = [[1] * (nd - k) + [2] * k for (_, _, _, k) in axes]
    if nd == 4:
        per_axis = [[1] + p for p in per_axis]
    levels = [list(t) for t in zip(*per_axis)]
    strides = levels[:3]
    total = [int(np.prod([lv[a] for lv in levels])) for a in range(3)]
    val = [int(math.ceil(v / t) * t) for (_, _, v, _), t in zip(axes, total)]
    return {"patch_size": [a[0] for a in axes], "crop_size": [a[1] for a in axes],
            "val_patch_size": val, "strides": strides, "num_downsamplings": nd}


def at_spacing(fingerprint: dict, spacing) -> dict:
    """The fingerprint as it would read at target `spacing` (mm, one value or one per axis)
    instead of the median spacing: median shape and object boxes rescaled, volumes by the
    voxel-volume ratio. A coarser spacing is nnU-Net's low-resolution idea: smaller patches
    over the same anatomy, for budgets like the demo's."""
    new = np.asarray(spacing, float).ravel()
    if new.size not in (1, 3) or not (np.isfinite(new).all() and (new > 0).all()):
        raise PlanError(f"spacing {spacing}: one or three positive millimetre values")
    new = np.broadcast_to(new, (3,))
    factor = np.asarray(fingerprint["target_spacing"], float) / new
    classes = {k: {**c, "mean_bbox_voxels": (np.asarray(c["mean_bbox_voxels"]) * factor).tolist(),
                   "mean_volume_voxels": c["mean_volume_voxels"] * float(factor.prod())}
               if c["mean_volume_voxels"] else c for k, c in fingerprint["classes"].items()}
    return {**fingerprint, "target_spacing": new.tolist(), "classes": classes,
            "median_shape": (np.asarray(fingerprint["median_shape"]) * factor).tolist()}


def make_plan(fingerprint: dict, model: str = "rog", width: int = 64, spacing=None) -> Plan:
    """Build the Plan for a dataset from its fingerprint (the paper's planning rules).

    Args:
        fingerprint: the dataset's statistics (`rog.data.fingerprint.compute_fingerprint`).
        model: the registered model the plan names.
        width: its level-0 width.
        spacing: target spacing in mm, one value or three, instead of the median (`at_spacing`).

    Returns:
        The `Plan`: patch sizes, strides, normalisation, batch size, model.
    """
    if spacing is not None:
        fingerprint = at_spacing(fingerprint, spacing)
    classes = {k: c for k, c in fingerprint["classes"].items() if c["mean_volume_voxels"]}
    if not classes:
        raise PlanError(f"{fingerprint['dataset']}: no foreground class occurs in any training case")
    smallest = min(classes.values(), key=lambda c: c["mean_volume_voxels"])
    sizes = plan_sizes(fingerprint["median_shape"], smallest["mean_bbox_voxels"],
                       smallest["mean_volume_voxels"])
    norm = []
    for ch in fingerprint["intensity"]:
        if ch["modality"].strip().upper() == "CT":
            norm.append({"scheme": "ct", "mean": ch["mean"], "std": ch["std"],
                         "lower": ch["percentile_00_5"], "upper": ch["percentile_99_5"]})
        else:
            norm.append({"scheme": "zscore"})
    labels = fingerprint["labels"]
    batch = int(np.clip(VOXEL_BUDGET // int(np.prod(sizes["patch_size"])), 2, 24))
    plan = Plan(
        dataset=fingerprint["dataset"], modalities=list(fingerprint["modalities"]), labels=dict(labels),
        class_kinds={v: class_kind(v) for k, v in labels.items() if k != "0"},
        target_spacing=list(fingerprint["target_spacing"]), normalization=norm,
        batch_size=batch, median_shape=list(fingerprint["median_shape"]),
        mean_object_voxels={k: c["mean_volume_voxels"] for k, c in classes.items()},
        model=model, width=width, ignore_label=fingerprint.get("ignore_label"), **sizes,
    )
    plan.validate(f"plan for {plan.dataset}")
    return plan


def plan_for(num_channels: int, num_classes: int, strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
             patch_size=(96, 96, 96), width: int = 64, model: str = "rog") -> Plan:
    """A Plan from explicit network settings, for model summaries, tests and user models that
    need no dataset statistics (normalisation is per-image z-score)."""
    strides = [[int(v) for v in ((s,) * 3 if isinstance(s, int) else s)] for s in strides]
    plan = Plan(
        dataset="explicit", modalities=[f"ch{c}" for c in range(num_channels)],
        labels={str(k): "background" if k == 0 else f"class{k}" for k in range(num_classes)},
        class_kinds={f"class{k}": "organ" for k in range(1, num_classes)},
        target_spacing=[1.0, 1.0, 1.0], normalization=[{"scheme": "zscore"}] * num_channels,
        patch_size=list(patch_size), crop_size=list(patch_size), val_patch_size=list(patch_size),
        strides=strides, num_downsamplings=5, batch_size=2, median_shape=list(patch_size),
        model=model, width=width)
    plan.validate("explicit plan")
    return plan
