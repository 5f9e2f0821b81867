"""Whole-case prediction at clinical size: rog's predictor vs nnU-Net's (`nnUNetPredictor`,
the optional `nnunetv2` extra), per stage and in peak memory, on one CT-sized case written by
this script (512x512x200 voxels of 0.7 x 0.7 x 2.5 mm), with the same small network (ROG,
width 8, random weights; nnU-Net's side gets it with its strides in nnU-Net's z-first order).

Stages: read, preprocess (crop, resample to 0.8 x 0.8 x 2.5 mm, CT normalisation), sliding
window (patch 128x128x32, overlap 0.5, Gaussian weights, no mirroring), inverse (resampling
back, argmax, un-cropping), post-process (largest component of class 1), write. Each side runs
in its own process (peak RSS = that process's), sides alternate, medians of --repeats.
Usage: python benchmarks/predict.py [--repeats 3] [--depth 200]
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPACING, TARGET, PATCH = (0.7, 0.7, 2.5), (0.8, 0.8, 2.5), (128, 128, 32)
STRIDES = ((2, 2, 1), (2, 2, 1), (2, 2, 2))  # per axis x, y, z (rog's order)
INTENSITY = {"mean": 60.0, "std": 40.0, "percentile_00_5": -100.0, "percentile_99_5": 250.0}


def write_case(path: Path, depth: int) -> None:
    """A CT-like volume: body, organ, lesion, noise; HU-like values."""
    from rog.data.io import write_volume
    rng = np.random.default_rng(0)
    x, y, z = np.ogrid[:512, :512, :depth]
    body = ((x - 256) / 220) ** 2 + ((y - 256) / 180) ** 2 < 1
    organ = ((x - 300) / 90) ** 2 + ((y - 240) / 70) ** 2 + ((z - depth / 2) / (depth / 3)) ** 2 < 1
    img = np.where(body, 20.0, -1000.0) + np.where(organ, 80.0, 0.0)
    img = (img + rng.normal(0, 15, img.shape)).astype(np.float32)
    write_volume(path, img, np.diag([*SPACING, 1.0]))


def network():
    import torch
    from rog.plan import plan_for
    torch.manual_seed(0)
    plan = plan_for(1, 3, STRIDES, PATCH, width=8)
    from rog.models.registry import build_model
    return build_model(plan, "rog").eval(), plan


def run_rog(case: Path, out: Path) -> dict:
    from rog.data.dataset import Case
    from rog.infer.predictor import StageTimes, predict_cases
    model, plan = network()
    plan.target_spacing = list(TARGET)
    plan.normalization = [{"scheme": "ct", "mean": INTENSITY["mean"], "std": INTENSITY["std"],
                           "lower": INTENSITY["percentile_00_5"], "upper": INTENSITY["percentile_99_5"]}]
    times = StageTimes()
    predict_cases(model, plan, [Case("case", (case,))], out, "cpu", 0.5, None,
                  {"largest_component": True, "small_lesions": False}, progress=False, times=times)
    return dict(times)


def run_nnunet(case: Path, out: Path) -> dict:
    import torch
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from rog.infer.predictor import StageTimes
    from rog.models.registry import build_model
    from rog.plan import plan_for
    torch.manual_seed(0)  # the same network, axes in nnU-Net's z-first order
    model = build_model(plan_for(1, 3, [s[::-1] for s in STRIDES], PATCH[::-1], width=8), "rog").eval()
    resampling = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    config = {"data_identifier": "bench", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
              "patch_size": list(PATCH[::-1]), "median_image_size_in_voxels": [200, 448, 448],
              "spacing": list(TARGET[::-1]), "normalization_schemes": ["CTNormalization"],
              "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
              "resampling_fn_data_kwargs": {**resampling, "order": 3},
              "resampling_fn_seg": "resample_data_or_seg_to_shape",
              "resampling_fn_seg_kwargs": {**resampling, "is_seg": True},
              "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
              "resampling_fn_probabilities_kwargs": resampling, "batch_dice": True,
              "architecture": {"network_class_name": "rog.models.rog.ROG", "arch_kwargs": {}, "_kw_requires_import": []}}
    plans = {"dataset_name": "Bench", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": list(SPACING[::-1]),
             "original_median_shape_after_transp": [200, 512, 512], "image_reader_writer": "NibabelIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": config},
             "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": INTENSITY}}
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
               "numTraining": 1, "file_ending": ".nii.gz"}
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(model, pm, cm, [model.state_dict()], dataset, "nnUNetTrainer", None)
    times, io = StageTimes(), NibabelIO()
    with times("read"):
        data, props = io.read_images([str(case)])
    with times("preprocess"):
        data, _, props = cm.preprocessor_class(verbose=False).run_case_npy(data, None, props, pm, cm, dataset)
    with times("sliding window"):
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data))
    with times("inverse"):
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, pm, cm, pm.get_label_manager(dataset), props, num_threads_torch=torch.get_num_threads())
    with times("post-process"):
        seg = remove_all_but_largest_component_from_segmentation(seg, [1])
    with times("write"):
        io.write_seg(seg, str(out / "case.nii.gz"), props)
    return dict(times)


def same_map_writes(case: Path, repeats: int) -> dict:
    """Both writers on one label map (the case's body and organ by threshold): the write stage
    without the difference in content that two networks' predictions bring."""
    import statistics
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO
    from rog.data.io import read_image, write_label
    image, geom = read_image([case])
    label = ((image[0] > -500).astype(np.uint8) + (image[0] > 60)).astype(np.uint8)
    _, props = NibabelIO().read_images([str(case)])
    times = {"rog": [], "nnunet": []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeats):
            for side in times:
                t0 = time.perf_counter()
                if side == "rog":
                    write_label(Path(out) / "a.nii.gz", label, geom)
                else:  # nnU-Net holds the map z-first
                    NibabelIO().write_seg(label.transpose(2, 1, 0), str(Path(out) / "b.nii.gz"), props)
                times[side].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def child(side: str, case: Path) -> None:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        times = (run_rog if side == "rog" else run_nnunet)(case, Path(out))
        times["total"] = time.perf_counter() - t0
    times["peak RSS GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(json.dumps(times))


def main() -> None:
    import argparse
    import statistics
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--side", choices=["rog", "nnunet"], help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        return child(a.side, Path(a.case))
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case.nii.gz"
        write_case(case, a.depth)
        runs = {"rog": [], "nnunet": []}
        for _ in range(a.repeats):
            for side in runs:  # alternating, each in a fresh process
                done = subprocess.run([sys.executable, __file__, "--side", side, "--case", str(case)],
                                      capture_output=True, text=True, check=True)
                runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
        writes = same_map_writes(case, a.repeats)
    stages = list(runs["rog"][0])
    print(f"# predict, 512x512x{a.depth} CT case, median of {a.repeats} (seconds; peak RSS in GiB)")
    print("stage | rog | nnU-Net | rog / nnU-Net")
    for s in stages:
        r, n = (statistics.median(x[s] for x in runs[k]) for k in ("rog", "nnunet"))
        print(f"{s} | {r:.3f} | {n:.3f} | {r / n:.2f}")
    print(f"write, the same label map | {writes['rog']:.3f} | {writes['nnunet']:.3f} | "
          f"{writes['rog'] / writes['nnunet']:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
