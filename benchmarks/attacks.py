"""APGD iteration vs one forward + input-gradient pass of the same model; Square queries/s.

    python benchmarks/attacks.py [--device cuda]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, parser, report  # noqa: E402

from rog.attacks import APGD, Square, ThreatModel  # noqa: E402
from rog.models.rog import ROG  # noqa: E402


def main():
    p = parser(__doc__)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--queries", type=int, default=40)
    args = p.parse_args()
    torch.manual_seed(0)
    patch = (32, 48, 32)
    model = ROG(1, 3, ((1, 1, 1), (1, 1, 1), (2, 2, 2))).to(args.device).eval()
    x = torch.randn(1, 1, *patch, device=args.device)
    with torch.no_grad():
        y = model(x).argmax(1)
    for q in model.parameters():
        q.requires_grad_(False)

    def fwd_grad():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y), xi)

    t_ref = median_time(fwd_grad, args.device, args.repeats)
    apgd = APGD(model, ThreatModel(8), iters=args.iters)
    t_apgd = median_time(lambda: apgd(x, y), args.device, max(args.repeats // 2, 1))
    # one APGD call = 1 clean forward + (iters + 1) forward/backward passes
    per_iter = t_apgd / (args.iters + 1)
    square = Square(model, ThreatModel(8), queries=args.queries)
    t_sq = median_time(lambda: square(x, y), args.device, max(args.repeats // 2, 1))
    rows = [{"what": "forward + input gradient", "seconds": t_ref, "ratio": 1.0},
            {"what": f"APGD iteration ({args.iters} iters incl. start)", "seconds": per_iter, "ratio": per_iter / t_ref},
            {"what": f"Square queries per second ({args.queries} queries)", "seconds": args.queries / t_sq,
             "ratio": float("nan")}]
    report("Attack cost on ROG (Hippocampus plan, 1x1x32x48x32)", rows, args)


if __name__ == "__main__":
    main()
