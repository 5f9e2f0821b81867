"""A trained-configuration folder of nnU-Net v2 built offline, for tests and benchmarks:
nnU-Net's own fingerprint and planner on a synthetic CT task (its environment variables
pointed at a scratch folder), a network from the 3d_fullres plans with random weights whose
head is centred on one case (so the map has every class and many boundaries), saved in
nnU-Net's checkpoint format."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from rog.data.synthetic import make_task

# nnU-Net's fingerprint samples 1e8 foreground voxels over the dataset (30 s here for six small
# volumes); 1e6 give the same percentiles to the precision these volumes have
PLAN = """
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments
extractor = DatasetFingerprintExtractor(1, num_processes=1)
extractor.num_foreground_voxels_for_intensitystats = 1e6
extractor.run()
plan_experiments([1])
"""


def _skull_strip(raw: Path) -> None:
    """Zero every channel of each image outside its head (where the smoothed first channel is
    below 0.6 of its 99th percentile), as skull-stripped MR is: nnU-Net then crops and z-scores inside
    the non-zero mask."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage
    for first in sorted(raw.glob("images*/*_0000.nii.gz")):
        files = sorted(first.parent.glob(first.name.replace("_0000", "_*")))
        images = [nib.load(f) for f in files]
        smooth = ndimage.gaussian_filter(np.asarray(images[0].dataobj, np.float32), 2)
        head = smooth > 0.6 * np.percentile(smooth, 99)
        for f, im in zip(files, images):
            nib.save(nib.Nifti1Image(np.where(head, np.asarray(im.dataobj), 0).astype(np.float32), im.affine), f)


def build(root: Path, size=(40, 48), cases: int = 4, test_cases: int = 2, kind: str = "ct",
          narrower: int = 1) -> tuple[Path, Path]:
    """(model folder, raw dataset folder) under `root`: CT (clipped to percentiles, anisotropic,
    resampled slice by slice) or skull-stripped two-channel MR (`kind="mri"`: cropped,
    normalised inside the non-zero mask, resampled in 3-D). `narrower`: every configuration's
    features per stage divided by it (the tests' cost; the benchmarks keep nnU-Net's widths)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from rog.external.nnunet import read_case
    from rog.external.nnunet_scan import Deployment, ScanPipeline
    from rog.infer.sliding_window import SlidingWindow
    raw = make_task(root / "raw" / "Dataset001_Synth", kind=kind, cases=cases, test_cases=test_cases, seed=3,
                    size=size, layout="nnunet")
    if kind == "mri":
        _skull_strip(raw)
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "results")}
    subprocess.run([sys.executable, "-c", PLAN], env=env, check=True, capture_output=True)
    plans = json.loads((root / "pre" / "Dataset001_Synth" / "nnUNetPlans.json").read_text())
    for c in plans["configurations"].values():
        arch = c["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [max(f // narrower, 2) for f in arch["features_per_stage"]]
    dataset_json = json.loads((raw / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    torch.manual_seed(0)
    channels, classes = len(dataset_json["channel_names"]), len(dataset_json["labels"])
    net = nnUNetTrainer.build_network_architecture(pm, cm, channels, classes, enable_deep_supervision=False).eval()
    data, _, props = read_case(pm, sorted((raw / "imagesTr").glob(f"synth{kind}_000_*.nii.gz")), None)
    seen = []  # the logits on the network's grid (outside the crop box the pipeline adds its own)

    def window(z):
        seen.append(SlidingWindow(net, cm.patch_size)(z))
        return seen[-1]

    with torch.no_grad():
        ScanPipeline(window, props["spacing"], Deployment.of(pm, cm))(torch.from_numpy(data)[None])
        logits = seen[0]
        net.decoder.seg_layers[-1].bias -= logits.mean((0, 2, 3, 4))
    model_dir = root / "results" / "Dataset001_Synth" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model_dir / "fold_0").mkdir(parents=True)
    (model_dir / "plans.json").write_text(json.dumps(plans))
    (model_dir / "dataset.json").write_text(json.dumps(dataset_json))
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json,
                              "device": torch.device("cpu")},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 1},
               model_dir / "fold_0" / "checkpoint_final.pth")
    return model_dir, raw


def add_folds(model_dir: Path, folds=(1, 2, 3, 4), mirror_axes=None, seed: int = 5) -> None:
    """Give `model_dir` more folds: fold 0's weights, each varied by 5 % of each tensor's sd (as
    separate trainings differ), saved as fold_F/checkpoint_final.pth for F in `folds` (ints or
    "all"); `mirror_axes` replaces the mirroring the checkpoints allow (fold 0's included)."""
    path = model_dir / "fold_0" / "checkpoint_final.pth"
    state = torch.load(path, weights_only=False)
    if mirror_axes is not None:
        state["inference_allowed_mirroring_axes"] = tuple(mirror_axes)
        torch.save(state, path)
    g = torch.Generator().manual_seed(seed)
    for fold in folds:
        weights = {k: v + 0.05 * v.std().nan_to_num() * torch.randn(v.shape, generator=g)
                   if v.is_floating_point() and v.numel() > 1 else v for k, v in state["network_weights"].items()}
        (model_dir / f"fold_{fold}").mkdir()
        torch.save({**state, "network_weights": weights}, model_dir / f"fold_{fold}" / "checkpoint_final.pth")


def add_configuration(model_dir: Path, raw: Path, configuration: str = "2d", seed: int = 0,
                      planned: dict | None = None, into: Path | None = None) -> Path:
    """A sibling folder of `model_dir`, TRAINER__PLANS__`configuration` (or `into`), with a
    network of that configuration of the same plans and dataset.json (random weights, head
    centred on one case as `build`'s; a cascade stage's on an empty previous segmentation), in
    nnU-Net's checkpoint format; returns it. `planned`: configuration name -> its entry in
    plans.json, for those the planner made none of for volumes this small (3d_lowres,
    3d_cascade_fullres)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from rog.external.nnunet import Slicewise, read_case
    from rog.external.nnunet_scan import Deployment, ScanPipeline
    from rog.infer.sliding_window import SlidingWindow
    plans, dataset_json = (json.loads((model_dir / f).read_text()) for f in ("plans.json", "dataset.json"))
    plans["configurations"].update(planned or {})
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    torch.manual_seed(seed)
    images, classes = len(dataset_json["channel_names"]), pm.get_label_manager(dataset_json).num_segmentation_heads
    channels = determine_num_input_channels(pm, cm, dataset_json)
    net = nnUNetTrainer.build_network_architecture(pm, cm, channels, classes, enable_deep_supervision=False).eval()
    flat = len(cm.patch_size) == 2
    data, _, props = read_case(pm, sorted((raw / "imagesTr").glob("*_000_*.nii.gz")), None)
    seen = []
    window = SlidingWindow(Slicewise(net) if flat else net, [1, *cm.patch_size] if flat else cm.patch_size)

    def centred(z):  # the image's channels, then an empty previous stage's
        seen.append(window(torch.cat([z, z.new_zeros(1, channels - images, *z.shape[2:])], 1)))
        return seen[-1]

    with torch.no_grad():
        ScanPipeline(centred, props["spacing"], Deployment.of(pm, cm))(torch.from_numpy(data)[None])
        net.decoder.seg_layers[-1].bias -= seen[0].mean((0, 2, 3, 4))
    folder = into or model_dir.parent / model_dir.name.replace(model_dir.name.split("__")[-1], configuration)
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": plans, "configuration": configuration, "fold": 0, "dataset_json": dataset_json,
                              "device": torch.device("cpu")},
                "inference_allowed_mirroring_axes": tuple(range(len(cm.patch_size))), "current_epoch": 1},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder
