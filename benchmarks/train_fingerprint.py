"""What training produces, for comparing two versions of the code: every defence (clean, Free
AT, PGD-AT, artefact replays, the mix with a warm-up, TRADES, the robust selection) trained
four short epochs on a small synthetic task by whichever rog is on the path; writes, per
recipe, a hash of the last weights and the log rows (seconds aside) to OUT/fingerprint.json.

    PYTHONPATH=/tmp/old/src python benchmarks/train_fingerprint.py /tmp/fp_old
    python benchmarks/train_fingerprint.py /tmp/fp_new
    cmp /tmp/fp_old/fingerprint.json /tmp/fp_new/fingerprint.json
"""
import csv
import hashlib
import json
import sys
from pathlib import Path

import torch

from rog.data.synthetic import make_task
from rog.pipeline.stages import run_preprocessing
from rog.train.trainer import TrainConfig, Trainer

root = Path(sys.argv[1])
task = make_task(root / "data" / "SynthCT", kind="ct", cases=4, test_cases=1, seed=3, size=(28, 40))
wd, plan, _ = run_preprocessing(task, root / "work", workers=1)
plan.width = 4
recipes = {"clean": {}, "free": {"adv": "free"}, "pgd": {"adv": "pgd", "pgd_steps": 2},
           "artefact": {"adv": "artefact", "artefact_severity": 3},
           "free_mix_warm": {"adv": "free", "clean_weight": 0.5, "eps_warmup": 0.5},
           "pgd_trades": {"adv": "pgd", "pgd_steps": 2, "trades": 1.0},
           "free_robust": {"adv": "free", "select": "robust", "select_iters": 1}}
out = {}
for name, extra in recipes.items():
    cfg = TrainConfig(epochs=4, iterations=2, batch_size=2, replays=2, device="cpu", **extra)
    run = root / "runs" / name
    Trainer(plan, wd.preprocessed, run, cfg, progress=False).fit()
    h = hashlib.sha256()
    for k, v in sorted(torch.load(run / "checkpoint_last.pt", weights_only=True)["model"].items()):
        h.update(k.encode())
        h.update(v.cpu().numpy().tobytes())
    with open(run / "log.csv") as f:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    out[name] = {"weights": h.hexdigest(), "log": rows}
(root / "fingerprint.json").write_text(json.dumps(out, indent=1) + "\n")
print(root / "fingerprint.json")
