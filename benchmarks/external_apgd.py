"""Time per APGD iteration with the threat on the scan as stored (the model's whole inference
as one differentiable function: crop, normalisation, resampling, the sliding window,
resampling back), against one forward + input-gradient pass of the network alone (its
sliding window on its own grid, the input its pipeline would give it), the floor an iteration
cannot beat. The model: an nnU-Net folder (built offline by `nnunet_model.build` unless
--model-dir is given; `--folds N` gives the built one N folds, and nnU-Net's deployment is
then the default: every fold, mirrored unless --disable-tta) or, with --run, a rog run. For
nnU-Net models one clean prediction of nnU-Net's own predictor (`nnUNetPredictor`, same folds
and mirroring) on the same case is timed too: an iteration's cost against the deployed tool's.
Usage: python benchmarks/external_apgd.py [--model-dir DIR | --run RUN] [--images DIR --labels DIR]
       [--folds N] [--disable-tta] [--iters 10] [--repeats 5]"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_times, parser, report  # noqa: E402
from rog.attacks import APGD, ThreatModel  # noqa: E402
from rog.attacks.base import frozen  # noqa: E402
from rog.external.nnunet import load_nnunet  # noqa: E402
from rog.external.raw import load_run_on_scans  # noqa: E402
from rog.infer.sliding_window import tile  # noqa: E402

p = parser(__doc__)
p.add_argument("--model-dir")
p.add_argument("--run", help="a rog run directory instead of an nnU-Net model (needs --images and --labels)")
p.add_argument("--images")
p.add_argument("--labels")
p.add_argument("--size", type=int, nargs=2, default=[64, 80], help="in-plane size of the built task's cases")
p.add_argument("--iters", type=int, default=10)
p.add_argument("--folds", type=int, default=1, help="folds of the built nnU-Net model (fold 0 and variations)")
p.add_argument("--disable-tta", dest="tta", action="store_false", help="no mirroring")
a = p.parse_args()
if a.model_dir or a.run:
    images, labels = Path(a.images), Path(a.labels)
else:
    from nnunet_model import add_folds, build
    model_dir, raw = build(Path(tempfile.mkdtemp()), size=tuple(a.size))
    add_folds(model_dir, range(1, a.folds))
    images, labels = raw / "imagesTs", raw / "labelsTs"
ext = load_run_on_scans(a.run) if a.run else load_nnunet(a.model_dir or model_dir, tta=a.tta)
case = ext.load_cases(images, labels, max_cases=1, device=a.device)[0]
network = tile(ext.network, ext.patch, **ext.window).to(a.device)
model = case.around(network)
seen = []  # the network's input, as the pipeline makes it from the clean scan
with torch.no_grad():
    case.around(lambda z: seen.append(z) or network(z))(case.x)
grid = seen[0]
print(f"case {case.name}: scan {tuple(case.x.shape[2:])} voxels, network grid {tuple(grid.shape[2:])}, "
      f"patch {ext.patch}")


def network_alone():
    z = grid.clone().requires_grad_(True)
    logits = network(z)
    (g,) = torch.autograd.grad(logits.logsumexp(1).mean(), z)
    return g


def pipeline():
    x = case.x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), case.y)
    (g,) = torch.autograd.grad(loss, x)
    return g


def apgd():
    APGD(model, ThreatModel(8), iters=a.iters, loss="ce", seed=0)(case.x, case.y, case.lo, case.hi)


timed = {"network": network_alone, "pipeline": pipeline, "apgd": apgd}
if not a.run:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    theirs = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=a.tta, device=torch.device(a.device),
                             perform_everything_on_device=a.device != "cpu", allow_tqdm=False)
    theirs.initialize_from_trained_model_folder(str(a.model_dir or model_dir), use_folds=ext.folds)
    files = ext.scan_files[case.name]
    data, props = theirs.plans_manager.image_reader_writer_class().read_images([str(f) for f in files])
    timed["nnunet_predict"] = lambda: theirs.predict_single_npy_array(data, props, None, None, False)
with frozen(network):
    t = median_times(timed, a.device, a.repeats)
per_iter = t["apgd"] / a.iters
report(f"APGD-CE iteration on the scan vs forward + input gradient of the network alone, {ext.name}",
       [{"scan_voxels": "x".join(map(str, case.x.shape[2:])), "grid_voxels": "x".join(map(str, grid.shape[2:])),
         "patch": "x".join(map(str, ext.patch)), "network_fwd_grad_s": t["network"],
         "pipeline_fwd_grad_s": t["pipeline"], "apgd_iter_s": per_iter,
         "pipeline_ratio": t["pipeline"] / t["network"], "apgd_ratio": per_iter / t["network"],
         **({"folds": len(ext.folds), "mirror_axes": str(ext.window.get("mirror_axes")),
             "nnunet_predict_s": t["nnunet_predict"], "apgd_iter_vs_nnunet_predict": per_iter / t["nnunet_predict"]}
            if "nnunet_predict" in t else {})}], a)
