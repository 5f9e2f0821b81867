"""The input gradient of nnU-Net-style tiling on a scan of clinical size, against the fp32
reference, with the half-precision sums in the backward pass (how rog tiled until issue 34,
rebuilt here by `half_backward`) and with rog's tiling now (half-precision values, fp32
gradient). The network is pointwise (a 1x1x1 convolution, confident, wrong on one slice in 7),
so the exact whole-volume logits are its full-volume pass: the reference gradient is that of
the same loss on them. Also the cost of the fp32 sums: one forward + input gradient with and
without a gradient taken through them.
Usage: python benchmarks/half_gradient.py [--shape 122 512 512] [--patch 80 160 160] [--repeats 3]"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_times, parser, report  # noqa: E402
from rog.infer.sliding_window import _tile, _weight_sum, _window, importance_map, sliding_window  # noqa: E402

p = parser(__doc__)
p.add_argument("--shape", type=int, nargs=3, default=[122, 512, 512])
p.add_argument("--patch", type=int, nargs=3, default=[80, 160, 160])
a = p.parse_args()

torch.manual_seed(0)
net = torch.nn.Conv3d(1, 2, 1)
with torch.no_grad():
    net.weight.copy_(torch.tensor([-4.0, 4.0]).view(2, 1, 1, 1, 1))
    net.bias.copy_(torch.tensor([2.0, -2.0]))
net.requires_grad_(False)
x = torch.rand(1, 1, *a.shape)
y = (x[:, 0] > 0.5).long()
y[:, ::7] = 1 - y[:, ::7]


def half_backward(v: torch.Tensor) -> torch.Tensor:
    """nnU-Net's tiling with autograd through its half-precision sums (rog before issue 34)."""
    xp, pad, starts = _tile(v, a.patch, 0.5, "constant", "nnunet")
    weight = importance_map(a.patch, style="nnunet").half()
    out = torch.zeros((1, 2, *xp.shape[2:]), dtype=torch.half)
    for st in starts:
        sl = (slice(None), slice(None), *_window(st, a.patch))
        out[sl] += net(xp[sl]) * weight
    return (out / _weight_sum(starts, a.patch, weight, xp.shape[2:])).float()


def gradient(model) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0]


def now(v):
    return sliding_window(net, v, a.patch, 0.5, style="nnunet")


reference = gradient(net).double().flatten()
rows = []
for name, model in (("half-precision backward (before)", half_backward), ("rog now: fp32 backward", now)):
    g = gradient(model).double().flatten()
    rows.append({"tiling": name, "voxels": x.numel(), "cosine_to_fp32": float(F.cosine_similarity(g, reference, 0)),
                 "voxel_gradients_zeroed": float(((g == 0) & (reference != 0)).double().mean())})
with torch.no_grad():
    same = torch.equal(now(x), half_backward(x))
t = median_times({"values_only": lambda: sliding_window(net, x, a.patch, 0.5, style="nnunet"),
                  "with_gradient": lambda: gradient(now)}, a.device, a.repeats)
for r in rows:
    r.update(values_equal_nnunet_half_sums=same, values_only_s=t["values_only"], fwd_grad_s=t["with_gradient"])
report(f"nnU-Net-style tiling's input gradient at {'x'.join(map(str, a.shape))}, patch {a.patch}", rows, a)
