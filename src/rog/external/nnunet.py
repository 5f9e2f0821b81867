"""nnU-Net v2 results folders as benchmark models (the optional `nnunetv2` extra).

A model folder is `.../DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION` with `dataset.json`,
`plans.json` and `fold_F/checkpoint_final.pth`. The network is built by nnU-Net's own code
(the trainer's `build_network_architecture`, as `nnUNetPredictor` does) and the checkpoint is
read with `weights_only=True`. Cases are the scans as nnU-Net's reader gives them (raw
intensities, voxels as stored) with their labels as stored; the model of a case is nnU-Net's
whole inference as one differentiable function of the scan (`rog.external.nnunet_scan`), so
eps, the box and the Dice are those of the scan, and the clean prediction is nnU-Net's own.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from rog.attacks.threat import ThreatModel
from rog.bench.cases import BenchCase
from rog.external.model import ExternalError, ExternalModel
from rog.external.nnunet_scan import Deployment, ScanPipeline

CHECKPOINT = "checkpoint_final.pth"


def _nnunet():
    try:
        import nnunetv2  # noqa: F401
    except ImportError as e:
        raise ExternalError("nnunetv2 is not installed: pip install 'rog[nnunet]' (under your torch constraint)") from e


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
    try:
        deployment = Deployment.of(plans, configuration)
    except ValueError as e:
        raise ExternalError(f"{d / 'plans.json'}: {e}") from e
    return NnUNetModel(
        name=f"nnU-Net {d.parent.name}/{d.name} fold {fold}", network=network, patch=list(configuration.patch_size),
        num_channels=channels, class_names=[names.get(k, f"class {k}") for k in range(1, labels.num_segmentation_heads)],
        weights=ckpt,
        window={"mirror_axes": tuple(mirror) if mirror else None, "style": "nnunet"},
        plans=plans, configuration=configuration, dataset_json=dataset_json, labels=labels,
        deployment=deployment)


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


def read_case(plans, files: list[Path], label: Path | None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """One case through nnU-Net's reader: (image `[C, ...]` float32 raw intensities, label
    `[...]` or None, properties with the spacing in the same axis order)."""
    rw = plans.image_reader_writer_class()
    try:
        data, props = rw.read_images([str(f) for f in files])
        seg = rw.read_seg(str(label))[0][0] if label else None
    except Exception as e:  # noqa: BLE001 - the reader's own error, with the file named
        raise ExternalError(f"{files[0] if label is None else label}: unreadable ({type(e).__name__}: {e})") from e
    if seg is not None and seg.shape != data.shape[1:]:
        raise ExternalError(f"{label}: shape {seg.shape} differs from the image's {data.shape[1:]}")
    return np.ascontiguousarray(data, np.float32), seg, props


@dataclass
class NnUNetModel(ExternalModel):
    """An nnU-Net v2 model: its plans, configuration, dataset.json, label manager, and the
    `Deployment` its predictor applies to every case."""

    plans: object = None
    configuration: object = None
    dataset_json: dict | None = None
    labels: object = None
    deployment: Deployment | None = None

    def load_cases(self, images, labels, names=None, max_cases=None, device="cpu") -> list[BenchCase]:
        out = []
        for name, files, label in case_files(Path(images), Path(labels), self.dataset_json, self.num_channels,
                                             names)[:max_cases]:
            data, seg, props = read_case(self.plans, files, label)
            x = torch.from_numpy(data)[None]
            lo, hi = ThreatModel.channel_range(x)
            y = torch.from_numpy(seg.astype(np.int64))[None]
            spacing = [float(s) for s in props["spacing"]]
            out.append(BenchCase(name, x.to(device), y.to(device), lo.to(device), hi.to(device),
                                 around=partial(ScanPipeline, spacing=spacing, deployment=self.deployment),
                                 spacing=spacing))
            self.scan_files[name] = files
        return out

    def check_save_volumes(self) -> None:
        reader = self.plans.image_reader_writer_class.__name__
        if reader != "SimpleITKIO":
            raise ExternalError(f"--save-volumes: nnU-Net reads this dataset with {reader}; only its SimpleITKIO "
                                "reader's voxel order is known to rog")

    def save_volume(self, case, path, data, label) -> None:
        # nnU-Net's SimpleITK reader gives the voxels in reversed index order: put them back in
        # the file's order and write them on the file's own grid
        from rog.data.io import read_image
        if case not in self.scan_geometry:
            self.scan_geometry[case] = read_image(self.scan_files[case][:1])[1]
        super().save_volume(case, path, data.transpose(2, 1, 0) if label else data.transpose(0, 3, 2, 1), label)
