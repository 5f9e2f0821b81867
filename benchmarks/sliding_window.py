"""rog's sliding window vs MONAI's sliding_window_inference: time and peak memory.

Same network, patch, overlap 0.5 and Gaussian weights. Peak memory: the CUDA allocator's
peak on GPU; on CPU, the rise of the resident set's high-water mark during the calls, in a
fresh process per method and round (the mark is reset through /proc/self/clear_refs first) whose
allocator hands freed memory back at once (glibc's mmap and trim thresholds fixed low), so
that the resident set follows the live tensors rather than what malloc kept cached; times on
CPU come from another process with the default allocator.

    python benchmarks/sliding_window.py [--device cuda]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, parser, report  # noqa: E402

VOLUME, PATCH = (1, 1, 160, 160, 96), (64, 64, 48)


def _setup(device):
    from rog.models.rog import ROG
    torch.manual_seed(0)
    model = ROG(1, 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2)), width=16).to(device).eval()
    return model, torch.randn(*VOLUME, device=device)


def _run(method, model, x, batch):
    with torch.no_grad():
        if method == "rog":
            from rog.infer import sliding_window
            return sliding_window(model, x, PATCH, 0.5, "gaussian", batch_size=batch)
        from monai.inferers import sliding_window_inference
        return sliding_window_inference(x, PATCH, batch, model, overlap=0.5, mode="gaussian")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(method, device, repeats, batch):
    model, x = _setup(device)
    _run(method, model, x, batch)  # warm-up outside the measurement (allocator caches, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
        base = _status_kib("VmRSS") * 1024
    t = median_time(lambda: _run(method, model, x, batch), device, repeats, warmup=0)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _status_kib("VmHWM") * 1024) - base
    print(json.dumps({"seconds": t, "peak_bytes": peak}))


def _child_result(cmd, env) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--child", default=None)
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per method; the median is reported")
    args = p.parse_args()
    if args.child:
        return child(args.child, args.device, args.repeats, args.batch)
    model, x = _setup(args.device)
    a, b = _run("rog", model, x, args.batch), _run("monai", model, x, args.batch)
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    runs = {"rog": [], "monai": []}
    for _ in range(args.rounds):  # rounds alternate the methods, so drifts hit both alike
        for method in runs:
            cmd = [sys.executable, __file__, "--child", method, "--device", args.device,
                   "--repeats", str(args.repeats), "--batch", str(args.batch)]
            r = _child_result(cmd, os.environ)
            if args.device == "cpu":  # time with the default allocator, memory with the strict one
                strict = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
                r["peak_bytes"] = _child_result(cmd, strict)["peak_bytes"]
            runs[method].append(r)
    res = {m: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_bytes")} for m, rs in runs.items()}
    rows = [{"method": m, "seconds": r["seconds"], "peak_MiB": r["peak_bytes"] / 2 ** 20,
             "time_ratio_vs_monai": r["seconds"] / res["monai"]["seconds"],
             "memory_ratio_vs_monai": r["peak_bytes"] / max(res["monai"]["peak_bytes"], 1)} for m, r in res.items()]
    report(f"Sliding window on {'x'.join(map(str, VOLUME[2:]))}, patch {'x'.join(map(str, PATCH))}, overlap 0.5, "
           f"Gaussian, ROG width 16 (argmax agreement with MONAI {agree:.5f})", rows, args)


if __name__ == "__main__":
    main()
