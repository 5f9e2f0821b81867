"""Shared timing helpers for the benchmark scripts (run by hand, never by the tests)."""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_times(fns: dict, device, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each callable in `fns`, timed in alternation (a, b, a, b, ...), so
    that drifts of the machine (clocks, neighbours) hit every side alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def median_time(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of one callable."""
    return median_times({"fn": fn}, device, repeats, warmup)["fn"]


def machine(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def report(title: str, rows: list[dict], args) -> None:
    print(f"# {title} — {machine(args.device)}, torch {torch.__version__}, {date.today()}, "
          f"median of {args.repeats}")
    if rows:
        cols = list(rows[0])
        print(" | ".join(cols))
        for r in rows:
            print(" | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"title": title, "machine": machine(args.device), "rows": rows}, f, indent=1)
