"""How many of Square's queries would re-evaluate the point it already has (a cube whose new
values equal the current ones), with and without redrawing them, on a trained run's benchmark
cases. Usage: python benchmarks/square_noops.py RUN [--eps 8] [--queries 100]"""
from __future__ import annotations

import argparse

import numpy as np

from rog.attacks import Square, ThreatModel
from rog.bench import default_cases, load_bench_cases
from rog.checkpoint import load_run
from rog.rundir import RunDir

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("run")
p.add_argument("--eps", type=float, nargs="+", default=[4, 8, 16])
p.add_argument("--queries", type=int, default=100)
a = p.parse_args()
model, plan, _ = load_run(a.run)
run = RunDir(a.run)
names, source = default_cases(run.workdir.preprocessed, run)
cases = load_bench_cases(run.workdir.preprocessed, names, "patch", plan.val_patch_size)
print(f"{a.run}: {len(cases)} case(s) ({source}), {a.queries} queries per case and eps")
for redraw in (False, True):
    noops, queries, dice = 0, 0, []
    for eps in a.eps:
        for c in cases:
            sq = Square(model, ThreatModel(eps), queries=a.queries, redraw_noops=redraw)
            sq(c.x, c.y, c.lo, c.hi)
            noops, queries = noops + sq.info["noop_queries"], queries + sq.info["queries"] - 1
            dice += sq.info["dice"]
    print(f"redraw_noops={redraw}: {noops} of {queries} cube queries left the point unchanged "
          f"({noops / queries:.1%}); mean Dice after Square {np.mean(dice):.4f}")
