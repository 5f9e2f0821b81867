"""ROG training step (forward + backward + Adam) with rog's depthwise convolution vs the plain
PyTorch implementation of the same architecture (nn.Conv3d everywhere), and Free AT vs clean.

    python benchmarks/train_step.py [--device cuda] [--repeats 5]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_times, parser, report  # noqa: E402

from rog.models.rog import ROG  # noqa: E402
from rog.train.adversarial import FreeAT  # noqa: E402

PLANS = {  # name: (channels, classes, strides, patch)
    "Hippocampus": (1, 3, ((1, 1, 1), (1, 1, 1), (2, 2, 2)), (32, 48, 32)),
    # BrainTumour's channels, classes and strides; its 128x128x96 patch is cut to 64x64x48 on CPU
    "BrainTumour-like": (4, 4, ((1, 1, 1), (2, 2, 2), (2, 2, 2)), (64, 64, 48)),
}


def _step(model, opt, x, y, precision, device):
    def run(inp=x):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(inp), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return run


def main():
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--full-brain-patch", action="store_true", help="use the real 128x128x96 patch")
    p.add_argument("--width", type=int, default=64, help="ROG width (paper: 64)")
    p.add_argument("--plans", nargs="*", default=list(PLANS), choices=list(PLANS))
    p.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = p.parse_args()
    rows = []
    for name in args.plans:
        c, k, strides, patch = PLANS[name]
        if name.startswith("Brain") and (args.full_brain_patch or args.device != "cpu"):
            patch = (128, 128, 96)
        torch.manual_seed(0)
        x = torch.randn(args.batch, c, *patch, device=args.device)
        y = torch.randint(0, k, (args.batch, *patch), device=args.device)
        fast = ROG(c, k, strides, width=args.width).to(args.device)
        plain = ROG(c, k, strides, width=args.width, fast=False).to(args.device)
        plain.load_state_dict(fast.state_dict())
        # gradients equal (fp32, one backward each)
        grads = []
        for m in (fast, plain):
            m.zero_grad()
            F.cross_entropy(m(x), y).backward()
            grads.append([q.grad.clone() for q in m.parameters()])
        # relative to the largest gradient entry: a few tensors (a 1-input pointwise conv right
        # before an instance norm) have gradients that are zero up to float noise
        flat = [torch.cat([g.flatten() for g in gs]) for gs in grads]
        rel = ((flat[0] - flat[1]).abs().max() / flat[1].abs().max()).item()
        for precision in args.precisions:
            steps = {label: _step(m, torch.optim.Adam(m.parameters(), 1e-3), x, y, precision, args.device)
                     for label, m in (("rog", fast), ("plain", plain))}
            times = median_times(steps, args.device, args.repeats)
            rows.append({"plan": name, "patch": "x".join(map(str, patch)), "precision": precision,
                         "rog_s": times["rog"], "plain_s": times["plain"], "speedup": times["plain"] / times["rog"],
                         "max_rel_grad_diff": rel if precision == "fp32" else float("nan")})
            print(rows[-1], flush=True)
        # Free AT optimiser step vs clean optimiser step (each Free replay is one optimiser step)
        opt = torch.optim.Adam(fast.parameters(), 1e-3)
        clean = _step(fast, opt, x, y, "fp32", args.device)
        free = FreeAT(eps=8, replays=5)

        def train_step(x_in, t):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(fast(x_in), t)
            loss.backward()
            opt.step()
            return loss.detach()

        t = median_times({"clean": clean, "free": lambda: free.step(x, y, x.flatten(2).amin(2), x.flatten(2).amax(2), train_step)}, args.device,
                         max(args.repeats // 2, 1))
        t_clean, t_free = t["clean"], t["free"] / 5
        rows.append({"plan": name, "patch": "x".join(map(str, patch)), "precision": "fp32 Free AT step",
                     "rog_s": t_free, "plain_s": t_clean, "speedup": t_free / t_clean, "max_rel_grad_diff": float("nan")})
    report("ROG training step: rog vs plain PyTorch (last rows: Free AT step vs clean step, ratio = free/clean)",
           rows, args)


if __name__ == "__main__":
    main()
