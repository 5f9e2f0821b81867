"""Time per APGD iteration on an nnU-Net model (whole case through the nnU-Net-style sliding
window, normalisation inside the model) against one forward + input-gradient pass of the same
model, the floor an iteration cannot beat. Builds an nnU-Net folder offline
(`nnunet_model.build`) unless --model-dir is given.
Usage: python benchmarks/external_apgd.py [--model-dir DIR --images DIR --labels DIR] [--iters 10] [--repeats 5]"""
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
from rog.infer.sliding_window import SlidingWindow  # noqa: E402

p = parser(__doc__)
p.add_argument("--model-dir")
p.add_argument("--images")
p.add_argument("--labels")
p.add_argument("--size", type=int, nargs=2, default=[64, 80], help="in-plane size of the built task's cases")
p.add_argument("--iters", type=int, default=10)
a = p.parse_args()
if a.model_dir:
    model_dir, images, labels = Path(a.model_dir), Path(a.images), Path(a.labels)
else:
    from nnunet_model import build
    model_dir, raw = build(Path(tempfile.mkdtemp()), size=tuple(a.size))
    images, labels = raw / "imagesTs", raw / "labelsTs"
ext = load_nnunet(model_dir, 0)
case = ext.load_cases(images, labels, max_cases=1, device=a.device)[0]
model = nn.Sequential(case.prepare, SlidingWindow(ext.network, ext.patch, **ext.window)).to(a.device)
print(f"case {case.name}: {tuple(case.x.shape[2:])} voxels, patch {ext.patch}")


def forward_and_gradient():
    x = case.x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), case.y)
    (g,) = torch.autograd.grad(loss, x)
    return g


def apgd():
    APGD(model, ThreatModel(8), iters=a.iters, loss="ce", seed=0)(case.x, case.y, case.lo, case.hi)


with frozen(model):
    t = median_times({"fwd_grad": forward_and_gradient, "apgd": apgd}, a.device, a.repeats)
per_iter = t["apgd"] / a.iters
report("APGD-CE iteration vs forward + input gradient, nnU-Net model, whole case",
       [{"case_voxels": "x".join(map(str, case.x.shape[2:])), "patch": "x".join(map(str, ext.patch)),
         "fwd_grad_s": t["fwd_grad"], "apgd_iter_s": per_iter, "ratio": per_iter / t["fwd_grad"]}], a)
