"""Time per APGD iteration with the threat on the scan as stored (the model's whole inference
as one differentiable function: crop, normalisation, resampling, the sliding window,
resampling back), against one forward + input-gradient pass of the network alone (its
sliding window on its own grid, the input its pipeline would give it), the floor an iteration
cannot beat. The model: an nnU-Net folder (built offline by `nnunet_model.build` unless
--model-dir is given) or, with --run, a rog run.
Usage: python benchmarks/external_apgd.py [--model-dir DIR | --run RUN] [--images DIR --labels DIR]
       [--iters 10] [--repeats 5]"""
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
from rog.infer.sliding_window import SlidingWindow  # noqa: E402

p = parser(__doc__)
p.add_argument("--model-dir")
p.add_argument("--run", help="a rog run directory instead of an nnU-Net model (needs --images and --labels)")
p.add_argument("--images")
p.add_argument("--labels")
p.add_argument("--size", type=int, nargs=2, default=[64, 80], help="in-plane size of the built task's cases")
p.add_argument("--iters", type=int, default=10)
a = p.parse_args()
if a.model_dir or a.run:
    images, labels = Path(a.images), Path(a.labels)
else:
    from nnunet_model import build
    model_dir, raw = build(Path(tempfile.mkdtemp()), size=tuple(a.size))
    images, labels = raw / "imagesTs", raw / "labelsTs"
ext = load_run_on_scans(a.run) if a.run else load_nnunet(a.model_dir or model_dir, 0)
case = ext.load_cases(images, labels, max_cases=1, device=a.device)[0]
network = SlidingWindow(ext.network, ext.patch, **ext.window).to(a.device)
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


with frozen(network):
    t = median_times({"network": network_alone, "pipeline": pipeline, "apgd": apgd}, a.device, a.repeats)
per_iter = t["apgd"] / a.iters
report(f"APGD-CE iteration on the scan vs forward + input gradient of the network alone, {ext.name}",
       [{"scan_voxels": "x".join(map(str, case.x.shape[2:])), "grid_voxels": "x".join(map(str, grid.shape[2:])),
         "patch": "x".join(map(str, ext.patch)), "network_fwd_grad_s": t["network"],
         "pipeline_fwd_grad_s": t["pipeline"], "apgd_iter_s": per_iter,
         "pipeline_ratio": t["pipeline"] / t["network"], "apgd_ratio": per_iter / t["network"]}], a)
