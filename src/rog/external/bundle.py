"""MONAI bundles as benchmark models.

A bundle folder holds `configs/inference.json` (with `network_def`, `preprocessing` and a
`SlidingWindowInferer` as `inferer`), `models/model.pt` (the weights, read with
`weights_only=True`) and optionally `configs/metadata.json` (class names). The network,
transforms and inferer come from the config through `monai.bundle.ConfigParser`. Cases go
through the bundle's own loading and spatial transforms; its intensity transforms
(`INTENSITY`) become a differentiable per-case map run inside the model, so attacks perturb
the image in the scanner's intensities. Their constants are the ones MONAI computes on the
case, and what moving them after the spatial transforms changes (none, when the bundle lists
them last) is kept as a fixed residual, so the clean input the network sees is the bundle's
own. Labels are resampled onto the network's grid by nearest neighbour through world
coordinates. A transform outside `SPATIAL` and `INTENSITY` is refused by name, rather than
let it change the intensities eps is measured on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from rog.attacks.threat import ThreatModel
from rog.bench.cases import BenchCase
from rog.data import formats
from rog.data.io import VolumeError, read_label, resample_world
from rog.external.model import ExternalError, ExternalModel, InputMap

SPATIAL = {"LoadImage", "EnsureChannelFirst", "Orientation", "Spacing", "EnsureType", "CastToType", "Identity",
           "SpatialPad", "DivisiblePad", "CenterSpatialCrop", "Resize"}
INTENSITY = {"ScaleIntensityRange", "NormalizeIntensity", "ScaleIntensity"}


def _kind(transform) -> str:
    return type(transform).__name__.removesuffix("d")


class IntensityMap(InputMap):
    """A bundle's intensity transforms on one case, `[B, C, ...]` -> `[B, C, ...]`: a sequence
    of (scale, shift, lo, hi, keep-zeros) steps, each x -> clamp(x * scale + shift, lo, hi)
    per channel (voxels that were 0 in the clean case kept as they are where the step says
    so, as `NormalizeIntensity(nonzero=True)`), plus the residual."""

    def __init__(self, steps: list[tuple], zero: torch.Tensor):
        super().__init__()
        self.steps = steps
        self.register_buffer("zero", zero[None])

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        for scale, shift, lo, hi, keep_zeros in self.steps:
            y = torch.clamp(x * scale.to(x) + shift.to(x), lo, hi)
            x = torch.where(self.zero, x, y) if keep_zeros else y
        return x


def _step(transform, x: torch.Tensor) -> tuple:
    """The per-channel affine step (with its clip) that `transform` applies to the case x
    `[C, ...]` (constants computed on x as MONAI does)."""
    kind, c = _kind(transform), x.shape[0]
    t = getattr(transform, "scaler", None) or getattr(transform, "normalizer", None) or transform
    view = (1, c, *([1] * (x.ndim - 1)))
    if kind == "ScaleIntensityRange":
        scale = 1.0 / (t.a_max - t.a_min)
        shift = -t.a_min * scale
        if t.b_min is not None and t.b_max is not None:
            scale, shift = scale * (t.b_max - t.b_min), shift * (t.b_max - t.b_min) + t.b_min
        lo, hi = (min(t.b_min, t.b_max), max(t.b_min, t.b_max)) if t.clip and t.b_min is not None else (-np.inf, np.inf)
        return torch.full(view, scale), torch.full(view, shift), lo, hi, False
    if kind == "NormalizeIntensity":
        if t.subtrahend is not None or t.divisor is not None:
            raise ExternalError(f"{type(transform).__name__} with fixed subtrahend/divisor: not supported")
        groups = [x[i] for i in range(c)] if t.channel_wise else [x]
        stats = []
        for g in groups:
            v = g[g != 0] if t.nonzero else g.flatten()
            mean, std = (float(v.mean()), float(v.std(unbiased=False))) if v.numel() else (0.0, 1.0)
            stats.append((mean, std if std != 0 else 1.0))
        stats = stats if t.channel_wise else stats * c
        scale = torch.tensor([1 / s for _, s in stats]).view(view)
        shift = torch.tensor([-m / s for m, s in stats]).view(view)
        return scale, shift, -np.inf, np.inf, bool(t.nonzero)
    if kind == "ScaleIntensity":
        if t.factor is not None or t.minv is None or t.maxv is None:
            raise ExternalError(f"{type(transform).__name__} with a factor: not supported")
        groups = [x[i] for i in range(c)] if t.channel_wise else [x]
        ranges = [(float(g.min()), float(g.max())) for g in groups]
        ranges = ranges if t.channel_wise else ranges * c
        scale = torch.tensor([(t.maxv - t.minv) / (b - a) if b > a else 0.0 for a, b in ranges]).view(view)
        shift = torch.tensor([t.minv - a * s for (a, _), s in zip(ranges, scale.flatten().tolist())]).view(view)
        return scale, shift, -np.inf, np.inf, False
    raise ExternalError(f"{type(transform).__name__}: not an intensity transform rog can run inside the model")


def _parse(bundle: Path, config: str):
    from monai.bundle import ConfigParser
    cfg = bundle / config
    if not cfg.is_file():
        raise ExternalError(f"{bundle}: not a MONAI bundle (no {config})")
    parser = ConfigParser()
    try:
        parser.read_config(str(cfg))
    except Exception as e:  # noqa: BLE001 - a malformed config file, named
        raise ExternalError(f"{cfg}: unreadable ({type(e).__name__}: {e})") from e
    parser["bundle_root"] = str(bundle)
    out = {}
    for key in ("network_def", "preprocessing", "inferer"):
        try:
            out[key] = parser.get_parsed_content(key)
        except Exception as e:  # noqa: BLE001 - the config's own error, with the key named
            raise ExternalError(f"{cfg}: '{key}' cannot be built ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    return out


def load_bundle(bundle_dir: str | Path, config: str = "configs/inference.json",
                weights: str = "models/model.pt") -> ExternalModel:
    """The model of the MONAI bundle at `bundle_dir`."""
    from monai.inferers import SlidingWindowInferer
    d = Path(bundle_dir)
    parts = _parse(d, config)
    wts = d / weights
    if not wts.is_file():
        raise ExternalError(f"{wts}: missing (the bundle's weights)")
    try:
        state = torch.load(wts, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExternalError(f"{wts}: not a readable state dict ({type(e).__name__})") from e
    network = parts["network_def"]
    try:
        network.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    except RuntimeError as e:
        raise ExternalError(f"{wts}: does not fit the bundle's network_def ({str(e).splitlines()[0]})") from e
    network.eval()
    inferer = parts["inferer"]
    if not isinstance(inferer, SlidingWindowInferer):
        raise ExternalError(f"{d / config}: inferer {type(inferer).__name__}: only SlidingWindowInferer is supported")
    transforms = list(getattr(parts["preprocessing"], "transforms", [parts["preprocessing"]]))
    for t in transforms:
        if _kind(t) not in SPATIAL | INTENSITY:
            raise ExternalError(f"{d / config}: preprocessing transform {type(t).__name__} is not supported "
                                f"(spatial: {', '.join(sorted(SPATIAL))}; intensity: {', '.join(sorted(INTENSITY))})")
    spatial = [t for t in transforms if _kind(t) in SPATIAL]
    intensity = [t for t in transforms if _kind(t) in INTENSITY]
    names, channels = _metadata(d)
    overlap = inferer.overlap if np.isscalar(inferer.overlap) else float(inferer.overlap[0])
    mode = str(getattr(inferer.mode, "value", inferer.mode))
    patch = [int(r) for r in inferer.roi_size]
    if names is None:  # classes from one forward pass of the network
        with torch.no_grad():
            k = network(torch.zeros(1, channels or 1, *patch)).shape[1]
        names = [f"class {i}" for i in range(1, k)]
    from monai.transforms import Compose
    return BundleModel(
        name=f"MONAI bundle {d.name}", network=network, patch=patch, num_channels=channels or 1,
        class_names=names, spacing=_spacing(spatial), weights=wts,
        window={"overlap": float(overlap), "mode": mode, "pad_mode": "constant"},
        spatial=Compose(spatial), intensity=intensity)


def _metadata(d: Path) -> tuple[list[str] | None, int | None]:
    """Foreground class names and input channels from configs/metadata.json, where it says."""
    meta = d / "configs" / "metadata.json"
    if not meta.is_file():
        return None, None
    try:
        fmt = json.loads(meta.read_text())["network_data_format"]
        pred = next(iter(fmt["outputs"].values()))
        image = next(iter(fmt["inputs"].values()))
        names = [pred["channel_def"][str(k)] for k in range(1, int(pred["num_channels"]))]
        return names, int(image["num_channels"])
    except (KeyError, ValueError, StopIteration, TypeError):
        return None, None


def _spacing(spatial) -> list[float]:
    """The network grid's voxel size in mm: the bundle's Spacing transform's pixdim (else 1 mm)."""
    for t in spatial:
        if _kind(t) == "Spacing":
            pixdim = getattr(getattr(t, "spacing_transform", t), "pixdim", None)
            if pixdim is not None:
                return [float(v) for v in np.broadcast_to(np.asarray(pixdim, float), (3,))]
    return [1.0, 1.0, 1.0]


def preprocess(spatial, intensity, image: Path) -> tuple[torch.Tensor, np.ndarray, IntensityMap]:
    """The bundle's preprocessing of one image: (raw intensities on the network grid `[C, ...]`,
    that grid's affine, the case's `IntensityMap`)."""
    try:
        d = spatial({"image": str(image)})
    except Exception as e:  # noqa: BLE001 - MONAI's reader error, with the file named
        raise ExternalError(f"{image}: cannot be read by the bundle's transforms ({type(e).__name__})") from e
    raw = torch.as_tensor(d["image"]).float().contiguous()
    affine = np.asarray(d["image"].affine, float)
    theirs = {"image": d["image"].clone()}
    steps = []
    for t in intensity:
        steps.append(_step(t, torch.as_tensor(theirs["image"]).float()))
        theirs = t(theirs)
    return raw, affine, IntensityMap(steps, raw == 0).fit_residual(raw, torch.as_tensor(theirs["image"]))


def _prepared(prepare: IntensityMap, model: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.Sequential(prepare, model)


@dataclass
class BundleModel(ExternalModel):
    """A MONAI bundle's model: its spatial transforms (run as the bundle does) and intensity
    transforms (run inside the model, per case)."""

    spatial: object = None
    intensity: list = field(default_factory=list)

    def load_cases(self, images, labels, names=None, max_cases=None, device="cpu") -> list[BenchCase]:
        images, labels = Path(images), Path(labels)
        files = formats.images_in(images) if images.is_dir() else {}
        if not files:
            raise ExternalError(f"{images}: no image ({', '.join(formats.ENDINGS)} or DICOM series folder)")
        references = formats.images_in(labels) if labels.is_dir() else {}
        out = []
        for name in [n for n in files if not names or n in names][:max_cases]:
            if name not in references:
                raise ExternalError(f"{labels}: missing label of case {name}")
            raw, affine, prepare = preprocess(self.spatial, self.intensity, files[name])
            try:
                lab, geometry = read_label(references[name])
            except VolumeError as e:
                raise ExternalError(str(e)) from e
            y = resample_world(lab.astype(np.int64), np.asarray(geometry.affine), affine, raw.shape[1:])
            lo, hi = ThreatModel.channel_range(raw[None])
            out.append(BenchCase(name, raw[None].to(device), torch.from_numpy(y)[None].to(device), lo.to(device),
                                 hi.to(device), around=partial(_prepared, prepare.to(device))))
        return out
