"""nnU-Net v2 results folders as benchmark models (the optional `nnunetv2` extra).

A model folder is `.../DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION` with `dataset.json`,
`plans.json` and `fold_F/checkpoint_final.pth`. The network is built by nnU-Net's own code
(the trainer's `build_network_architecture`, as `nnUNetPredictor` does) and the checkpoint is
read with `weights_only=True`. Cases go through nnU-Net's own preprocessing functions in its
order (reader, transpose, crop to the non-zero box, resampling to the configuration's
spacing) except the intensity normalisation, which becomes a differentiable per-case input
map (`Normalisation`) with the constants nnU-Net computes on the cropped image: the attack
then perturbs the image in the scanner's intensities and eps is /255 of the case's raw
range, the same threat whatever a model's normalisation. nnU-Net normalises before it
resamples and the map runs after resampling; the two differ where CT clipping or the
non-zero mask meets the resampling (cubic overshoot at the body's edge). That residual,
nnU-Net's input minus the map's output on the clean case, is kept as a fixed per-case
offset (`Normalisation.residual`), so the clean input the network sees is nnU-Net's own and
the perturbation still passes through the clip and the mask.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rog.attacks.threat import ThreatModel
from rog.bench.cases import BenchCase
from rog.external.model import ExternalError, ExternalModel, InputMap

CHECKPOINT = "checkpoint_final.pth"
SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization")


def _nnunet():
    try:
        import nnunetv2  # noqa: F401
    except ImportError as e:
        raise ExternalError("nnunetv2 is not installed: pip install 'rog[nnunet]' (under your torch constraint)") from e


class Normalisation(InputMap):
    """nnU-Net's intensity normalisation of one case as a differentiable map `[B, C, ...]` ->
    `[B, C, ...]`: per channel clip to [lo, hi] (CT; +-inf otherwise), then (x - mean) / std;
    channels normalised over the non-zero mask (`masked`) are 0 outside `mask` `[*spatial]`;
    plus the residual (see the module's note)."""

    def __init__(self, mean, std, lo, hi, masked, mask: torch.Tensor | None):
        super().__init__()
        view = (1, -1, 1, 1, 1)
        for name, v in (("mean", mean), ("std", std), ("lo", lo), ("hi", hi)):
            self.register_buffer(name, torch.tensor(v, dtype=torch.float32).view(view))
        self.register_buffer("outside", None if mask is None else
                             (~mask.bool())[None, None] & torch.tensor(masked).view(view))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        z = (torch.clamp(x, self.lo, self.hi) - self.mean) / self.std
        return z if self.outside is None else z.masked_fill(self.outside, 0.0)


def _normalisation(data: np.ndarray, seg: np.ndarray, configuration, intensity: dict) -> tuple[list, ...]:
    """Per-channel (mean, std, lo, hi, masked) as nnU-Net's normalisers compute them on the
    cropped image `data` `[C, ...]` (seg `[1, ...]`: -1 outside the non-zero mask)."""
    out = []
    for c, scheme in enumerate(configuration.normalization_schemes):
        masked = bool(configuration.use_mask_for_norm[c])
        if scheme == "ZScoreNormalization":
            v = data[c][seg[0] >= 0] if masked else data[c]
            out.append((float(v.mean()), max(float(v.std()), 1e-8), -np.inf, np.inf, masked))
        elif scheme == "CTNormalization":
            p = intensity[str(c)]
            out.append((p["mean"], max(p["std"], 1e-8), p["percentile_00_5"], p["percentile_99_5"], False))
        elif scheme == "NoNormalization":
            out.append((0.0, 1.0, -np.inf, np.inf, False))
        else:
            raise ExternalError(f"normalisation {scheme}: not supported (supported: {', '.join(SCHEMES)})")
    return tuple(zip(*out))


def _load_checkpoint(path: Path) -> dict:
    # nnU-Net checkpoints hold plain containers, numbers, strings and a torch.device
    try:
        with torch.serialization.safe_globals([torch.device]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint file
        raise ExternalError(f"{path}: not a readable nnU-Net checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from e


def load_nnunet(model_dir: str | Path, fold: int | str, tta: bool = False, checkpoint: str = CHECKPOINT) -> ExternalModel:
    """The nnU-Net model of `model_dir`, fold `fold` (an int or "all"); `tta`: mirroring
    test-time augmentation over the axes the checkpoint allows (logits averaged, as nnU-Net)."""
    _nnunet()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    d = Path(model_dir)
    for name in ("dataset.json", "plans.json"):
        if not (d / name).is_file():
            raise ExternalError(f"{d}: not an nnU-Net model folder (no {name}; expected "
                                ".../DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION)")
    ckpt = d / f"fold_{fold}" / checkpoint
    if not ckpt.is_file():
        folds = sorted(p.parent.name for p in d.glob(f"fold_*/{checkpoint}"))
        raise ExternalError(f"{ckpt}: missing (folds with {checkpoint}: {', '.join(folds) or 'none'})")
    state = _load_checkpoint(ckpt)
    dataset_json = json.loads((d / "dataset.json").read_text())
    plans = PlansManager(json.loads((d / "plans.json").read_text()))
    configuration = plans.get_configuration(state["init_args"]["configuration"])
    labels = plans.get_label_manager(dataset_json)
    if labels.has_regions or labels.has_ignore_label:
        raise ExternalError(f"{d}: region-based or ignore-label nnU-Net models are not supported")
    if len(configuration.patch_size) != 3 or configuration.previous_stage_name:
        raise ExternalError(f"{d}: only 3D configurations without a cascade stage are supported")
    channels = determine_num_input_channels(plans, configuration, dataset_json)
    trainer = recursive_find_trainer_class_by_name(state["trainer_name"])
    if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
        network = trainer.build_network_architecture(plans, configuration, channels, labels.num_segmentation_heads,
                                                     enable_deep_supervision=False)
    else:  # nnU-Net < 2.6 signature
        network = trainer.build_network_architecture(
            configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
            configuration.network_arch_init_kwargs_req_import, channels, labels.num_segmentation_heads,
            enable_deep_supervision=False)
    network.load_state_dict(state["network_weights"])
    network.eval()
    names = {int(v): k for k, v in dataset_json["labels"].items()}
    mirror = state.get("inference_allowed_mirroring_axes") if tta else None
    return NnUNetModel(
        name=f"nnU-Net {d.parent.name}/{d.name} fold {fold}", network=network, patch=list(configuration.patch_size),
        num_channels=channels, class_names=[names.get(k, f"class {k}") for k in range(1, labels.num_segmentation_heads)],
        spacing=list(configuration.spacing), weights=ckpt,
        window={"mirror_axes": tuple(mirror) if mirror else None, "style": "nnunet"},
        plans=plans, configuration=configuration, dataset_json=dataset_json, labels=labels)


def case_files(images: Path, labels: Path | None, dataset_json: dict, channels: int,
               names: list[str] | None = None) -> list[tuple[str, list[Path], Path | None]]:
    """(case, channel files, label file) in nnU-Net's raw layout: IMAGES/CASE_XXXX.ext per
    channel, LABELS/CASE.ext. Every problem is an `ExternalError` naming the file."""
    ending = dataset_json["file_ending"]
    if not images.is_dir():
        raise ExternalError(f"{images}: no such images folder")
    found = sorted({p.name[:-len(ending) - 5] for p in images.glob(f"*_0000{ending}")})
    if not found:
        raise ExternalError(f"{images}: no CASE_0000{ending} image (nnU-Net's raw layout)")
    out = []
    for name in names or found:
        files = [images / f"{name}_{c:04d}{ending}" for c in range(channels)]
        for f in files:
            if not f.is_file():
                raise ExternalError(f"{f}: missing: the model takes {channels} channel(s) "
                                    f"({', '.join(dataset_json['channel_names'].values())})")
        extra = images / f"{name}_{channels:04d}{ending}"
        if extra.is_file():
            raise ExternalError(f"{extra}: the case has more channels than the model's {channels}")
        label = labels / f"{name}{ending}" if labels else None
        if label is not None and not label.is_file():
            raise ExternalError(f"{label}: missing label of case {name}")
        out.append((name, files, label))
    return out


def nnunet_normalised(data: np.ndarray, seg: np.ndarray | None, configuration, plans) -> np.ndarray:
    """nnU-Net's own normalisation of a cropped case `[C, ...]` (its input before resampling).
    nnU-Net offers it only as the private `DefaultPreprocessor._normalize`: this is the one
    call of it, and `tests/test_nnunet.py` pins its signature against the installed nnunetv2
    (checked with 2.8.1), so a change there fails a test, not a benchmark."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    return DefaultPreprocessor(verbose=False)._normalize(data, seg, configuration,
                                                         plans.foreground_intensity_properties_per_channel)


def preprocess(plans, configuration, files: list[Path], label: Path | None):
    """nnU-Net's preprocessing of one case without its normalisation: (data `[C, ...]` float32
    raw intensities on the network's grid, seg `[1, ...]` (-1 outside the non-zero mask),
    properties for nnU-Net's export, the case's `Normalisation`)."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
    rw = plans.image_reader_writer_class()
    try:
        data, props = rw.read_images([str(f) for f in files])
        seg = rw.read_seg(str(label))[0] if label else None
    except Exception as e:  # noqa: BLE001 - the reader's own error, with the file named
        raise ExternalError(f"{files[0] if label is None else label}: unreadable ({type(e).__name__}: {e})") from e
    if seg is not None and seg.shape[1:] != data.shape[1:]:
        raise ExternalError(f"{label}: shape {seg.shape[1:]} differs from the image's {data.shape[1:]}")
    data = data.astype(np.float32)
    order = [0, *[i + 1 for i in plans.transpose_forward]]
    data = data.transpose(order)
    seg = seg.transpose(order) if seg is not None else None
    spacing = [props["spacing"][i] for i in plans.transpose_forward]
    props["shape_before_cropping"] = data.shape[1:]
    data, seg, bbox = crop_to_nonzero(data, seg)
    props["bbox_used_for_cropping"] = bbox
    props["shape_after_cropping_and_before_resampling"] = data.shape[1:]
    constants = _normalisation(data, seg, configuration, plans.foreground_intensity_properties_per_channel)
    # nnU-Net's own normalised input (normalise, then resample), for the residual
    theirs = nnunet_normalised(data.copy(), seg, configuration, plans)
    shape = compute_new_shape(data.shape[1:], spacing, configuration.spacing)
    theirs = configuration.resampling_fn_data(theirs, shape, spacing, configuration.spacing)
    data = np.ascontiguousarray(configuration.resampling_fn_data(data, shape, spacing, configuration.spacing), np.float32)
    seg = configuration.resampling_fn_seg(seg, shape, spacing, configuration.spacing)
    mask = torch.from_numpy(seg[0] >= 0) if any(constants[4]) else None
    norm = Normalisation(*constants, mask=mask).fit_residual(torch.from_numpy(data), torch.from_numpy(theirs))
    return data, seg, props, norm


@dataclass
class NnUNetModel(ExternalModel):
    """An nnU-Net v2 model: its plans, configuration, dataset.json and label manager."""

    plans: object = None
    configuration: object = None
    dataset_json: dict | None = None
    labels: object = None

    def load_cases(self, images, labels, names=None, max_cases=None, device="cpu") -> list[BenchCase]:
        out = []
        for name, files, label in case_files(Path(images), Path(labels), self.dataset_json, self.num_channels,
                                             names)[:max_cases]:
            data, seg, _, prepare = preprocess(self.plans, self.configuration, files, label)
            lo, hi = ThreatModel.channel_range(torch.from_numpy(data)[None])
            y = torch.from_numpy(np.maximum(seg[0], 0).astype(np.int64))[None]
            out.append(BenchCase(name, torch.from_numpy(data)[None].to(device), y.to(device), lo.to(device),
                                 hi.to(device), prepare.to(device)))
        return out

    def predict(self, files: list[Path], device="cpu") -> np.ndarray:
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        from rog.infer.sliding_window import SlidingWindow
        data, _, props, prepare = preprocess(self.plans, self.configuration, files, None)
        model = nn.Sequential(prepare, SlidingWindow(self.network, self.configuration.patch_size,
                                                    **self.window)).to(device)
        with torch.no_grad():
            logits = model(torch.from_numpy(data)[None].to(device))[0].cpu()
        return np.asarray(convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, self.plans, self.configuration, self.labels, props, return_probabilities=False))
