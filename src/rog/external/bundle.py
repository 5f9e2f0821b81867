"""MONAI bundles as benchmark models, the threat on the scan as stored.

A bundle folder holds `configs/inference.json` (with `network_def`, `preprocessing`, a
`SlidingWindowInferer` as `inferer` and optionally `postprocessing`), `models/model.pt` (the
weights, read with `weights_only=True`) and optionally `configs/metadata.json` (class names).
Everything comes from the config through `monai.bundle.ConfigParser`. A case is the image
as the bundle's loading transforms give it (`LOADING`: the scan's raw intensities in the
file's voxel order, with its affine) and its label as stored. The model of a case
(`BundlePipeline`) runs the bundle's own remaining transforms (`INSIDE`: reorientation,
resampling, padding, intensity scaling), which MONAI computes with differentiable torch
operations on a tensor that requires gradients, then the sliding window, then MONAI's own
inverse of those transforms on the output, so the prediction is back on the scan's grid; the
output is inverted as probabilities where the bundle's postprocessing applies a softmax
before its `Invertd` (as MONAI's bundles do), as logits otherwise. A transform outside
`LOADING` and `INSIDE` is refused by name rather than let it change what eps measures.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rog.attacks.threat import ThreatModel
from rog.bench.cases import BenchCase
from rog.data import formats
from rog.data.io import VolumeError, read_label
from rog.errors import read_json_object
from rog.external.model import ExternalError, ExternalModel

LOADING = {"LoadImage", "EnsureChannelFirst"}
INSIDE = {"Orientation", "Spacing", "EnsureType", "CastToType", "Identity", "SpatialPad", "DivisiblePad",
          "CenterSpatialCrop", "Resize", "ScaleIntensityRange", "NormalizeIntensity", "ScaleIntensity"}


def _kind(transform) -> str:
    return type(transform).__name__.removesuffix("d")


class BundlePipeline(nn.Module):
    """A bundle's inference of one case around a whole-volume `model`: x `[1, C, *shape]` (the
    scan as loaded) -> `[1, K, *shape]` on the same grid. `template`: the clean case as the
    loading transforms give it (a MetaTensor `[C, *shape]`, its affine and metadata);
    `inside`: the bundle's other preprocessing transforms (a `Compose`); `probabilities`:
    invert softmax probabilities and return their log (softmax of it gives them back)."""

    def __init__(self, model: nn.Module, template, inside, probabilities: bool):
        super().__init__()
        self.model, self.template, self.inside, self.probabilities = model, template, inside, probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x as a MetaTensor carrying the case's metadata (MetaTensor's constructor would cut
        # the graph; arithmetic with one keeps it)
        image = self.template * 0 + x[0]
        z = self.inside({"image": image})["image"]
        out = self.model(z.as_tensor()[None])[0]
        if self.probabilities:
            out = out.softmax(0)
        carrier = z.detach()[:1] * 0  # z's record of the transforms applied, for their inverse
        back = self.inside.inverse({"image": carrier + out})["image"].as_tensor()
        if self.probabilities:
            back = back.clamp_min(torch.finfo(back.dtype).tiny).log()
        return back[None]


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
    for key in ("network_def", "preprocessing", "inferer", "postprocessing"):
        if key == "postprocessing" and key not in parser:
            continue
        try:
            out[key] = parser.get_parsed_content(key)
        except Exception as e:  # noqa: BLE001 - the config's own error, with the key named
            raise ExternalError(f"{cfg}: '{key}' cannot be built ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    return out


def _inverts_probabilities(post) -> bool:
    """Whether the bundle's postprocessing applies a softmax before it inverts the preprocessing."""
    softmax = False
    for t in list(getattr(post, "transforms", [post])) if post is not None else []:
        if _kind(t) == "Activations":  # Activationsd holds one flag per key, Activations one
            softmax = softmax or bool(np.any(t.softmax))
        if _kind(t) == "Invert":
            return softmax
    return False


def load_bundle(bundle_dir: str | Path, config: str = "configs/inference.json",
                weights: str = "models/model.pt") -> ExternalModel:
    """The model of the MONAI bundle at `bundle_dir`."""
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Compose
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
        if _kind(t) not in LOADING | INSIDE:
            raise ExternalError(f"{d / config}: preprocessing transform {type(t).__name__} is not supported "
                                f"(loading: {', '.join(sorted(LOADING))}; run inside the model: "
                                f"{', '.join(sorted(INSIDE))})")
    n = next((i for i, t in enumerate(transforms) if _kind(t) not in LOADING), len(transforms))
    if any(_kind(t) in LOADING for t in transforms[n:]):
        raise ExternalError(f"{d / config}: LoadImage and EnsureChannelFirst must come before the other transforms")
    names, channels = _metadata(d)
    overlap = inferer.overlap if np.isscalar(inferer.overlap) else float(inferer.overlap[0])
    mode = str(getattr(inferer.mode, "value", inferer.mode))
    patch = [int(r) for r in inferer.roi_size]
    if names is None:  # classes from one forward pass of the network
        with torch.no_grad():
            k = network(torch.zeros(1, channels or 1, *patch)).shape[1]
        names = [f"class {i}" for i in range(1, k)]
    return BundleModel(
        name=f"MONAI bundle {d.name}", network=network, patch=patch, num_channels=channels or 1,
        class_names=names, weights=wts, window={"overlap": float(overlap), "mode": mode, "pad_mode": "constant"},
        loading=Compose(transforms[:n]), inside=Compose(transforms[n:]),
        probabilities=_inverts_probabilities(parts.get("postprocessing")))


def _metadata(d: Path) -> tuple[list[str] | None, int | None]:
    """Foreground class names and input channels from configs/metadata.json, where it says."""
    meta = d / "configs" / "metadata.json"
    if not meta.is_file():
        return None, None
    try:
        fmt = read_json_object(meta, ExternalError)["network_data_format"]
        pred = next(iter(fmt["outputs"].values()))
        image = next(iter(fmt["inputs"].values()))
        names = [pred["channel_def"][str(k)] for k in range(1, int(pred["num_channels"]))]
        return names, int(image["num_channels"])
    except (KeyError, ValueError, StopIteration, TypeError):
        return None, None


@dataclass
class BundleModel(ExternalModel):
    """A MONAI bundle's model: its loading transforms (run when a case is loaded), its other
    preprocessing transforms (run inside the model, inverted on the output) and whether it
    inverts probabilities."""

    loading: object = None
    inside: object = None
    probabilities: bool = False

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
            try:
                template = self.loading({"image": str(files[name])})["image"].float()
            except Exception as e:  # noqa: BLE001 - MONAI's reader error, with the file named
                raise ExternalError(f"{files[name]}: cannot be read by the bundle's transforms ({type(e).__name__})") from e
            try:
                label, geometry = read_label(references[name])
            except VolumeError as e:
                raise ExternalError(str(e)) from e
            if template.ndim != 4 or tuple(template.shape[1:]) != label.shape:
                raise ExternalError(f"{references[name]}: shape {label.shape} differs from the loaded image's "
                                    f"{tuple(template.shape[1:])} (the bundle must load [C, *shape] in the file's order)")
            x = template.as_tensor().clone()[None]
            lo, hi = ThreatModel.channel_range(x)
            out.append(BenchCase(name, x.to(device), torch.from_numpy(label.astype(np.int64))[None].to(device),
                                 lo.to(device), hi.to(device), spacing=[float(s) for s in geometry.spacing],
                                 around=partial(BundlePipeline, template=template.to(device), inside=self.inside,
                                                probabilities=self.probabilities)))
            self.scan_files[name], self.scan_geometry[name] = [files[name]], geometry
        return out
