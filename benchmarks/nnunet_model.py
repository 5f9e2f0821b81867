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

PLAN = """
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
extract_fingerprints([1], check_dataset_integrity=True, num_processes=1, verbose=False)
plan_experiments([1])
"""


def build(root: Path, size=(40, 48), cases: int = 4, test_cases: int = 2) -> tuple[Path, Path]:
    """(model folder, raw dataset folder) under `root`."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from rog.external.nnunet import preprocess
    from rog.infer.sliding_window import SlidingWindow
    raw = make_task(root / "raw" / "Dataset001_Synth", kind="ct", cases=cases, test_cases=test_cases, seed=3,
                    size=size, layout="nnunet")
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "results")}
    subprocess.run([sys.executable, "-c", PLAN], env=env, check=True, capture_output=True)
    plans = json.loads((root / "pre" / "Dataset001_Synth" / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((raw / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    torch.manual_seed(0)
    net = nnUNetTrainer.build_network_architecture(pm, cm, 1, 3, enable_deep_supervision=False).eval()
    data, _, _, norm = preprocess(pm, cm, [raw / "imagesTr" / "synthct_000_0000.nii.gz"], None)
    with torch.no_grad():
        logits = SlidingWindow(net, cm.patch_size)(norm(torch.from_numpy(data)[None]))
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
