"""APGD iteration vs one forward + input-gradient pass of the same model; Square queries/s on
a patch, and on a whole volume through the sliding window with and without the window cache.

    python benchmarks/attacks.py [--device cuda]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, median_times, parser, report  # noqa: E402

from rog.attacks import APGD, Square, ThreatModel  # noqa: E402
from rog.infer import SlidingWindow  # noqa: E402
from rog.models.rog import ROG  # noqa: E402


def main():
    p = parser(__doc__)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--queries", type=int, default=40)
    p.add_argument("--volume-width", type=int, default=16, help="ROG width for the volume-scope Square rows")
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

    apgd = APGD(model, ThreatModel(8), iters=args.iters)
    t = median_times({"ref": fwd_grad, "apgd": lambda: apgd(x, y)}, args.device, args.repeats)
    t_ref, t_apgd = t["ref"], t["apgd"]
    # one APGD call = 1 clean forward + (iters + 1) forward/backward passes
    per_iter = t_apgd / (args.iters + 1)
    square = Square(model, ThreatModel(8), queries=args.queries)
    t_sq = median_time(lambda: square(x, y), args.device, max(args.repeats // 2, 1))
    rows = [{"what": "forward + input gradient", "seconds": t_ref, "ratio": 1.0},
            {"what": f"APGD iteration ({args.iters} iters incl. start)", "seconds": per_iter, "ratio": per_iter / t_ref},
            {"what": f"Square queries per second ({args.queries} queries)", "seconds": args.queries / t_sq,
             "ratio": float("nan")}]
    # volume scope: a 64x96x64 volume = 27 windows of the 32x48x32 patch; AutoAttack's p_init
    torch.manual_seed(0)
    small = ROG(1, 3, ((1, 1, 1), (1, 1, 1), (2, 2, 2)), width=args.volume_width).to(args.device).eval()
    sw = SlidingWindow(small, patch, batch_size=4)
    xv = torch.randn(1, 1, 64, 96, 64, device=args.device)
    with torch.no_grad():
        yv = sw(xv).argmax(1)
    squares = {cached: Square(sw, ThreatModel(8), queries=args.queries, window_cache=cached) for cached in (True, False)}
    t_vol = median_times({cached: (lambda a=a: a(xv, yv)) for cached, a in squares.items()}, args.device,
                         max(args.repeats // 2, 1))
    rows += [{"what": f"Square queries/s, volume 64x96x64, width {args.volume_width}, window cache",
              "seconds": args.queries / t_vol[True], "ratio": t_vol[False] / t_vol[True]},
             {"what": "Square queries/s, same, every window re-run", "seconds": args.queries / t_vol[False],
              "ratio": 1.0}]
    report("Attack cost on ROG (Hippocampus plan, 1x1x32x48x32; ratio of the volume rows = speed-up of the "
           "window cache)", rows, args)


if __name__ == "__main__":
    main()
