#!/usr/bin/env bash
# Does the binary margin-ratio loss (APGD-DLR / APGD-T on two classes) add anything over
# APGD-CE? A binary task (the synthetic MRI tumour task), a small clean ROG trained with the
# demo's budget, attacked on its held-out test cases at 4-16/255 with 5 and 20 iterations.
# Usage: bash benchmarks/binary_dlr.sh [WORKDIR]   (about 6 minutes on 2 cores)
set -euo pipefail
W=${1:-rog_work/binary_dlr}
python3 -m rog synth "$W/data/SynthMRI" --kind mri --cases 12 --test-cases 4 --seed 0
python3 -m rog plan "$W/data/SynthMRI" -w "$W" --width 8
python3 -m rog train "$W/data/SynthMRI" -w "$W" --name clean --epochs 40 --iterations 10 --batch-size 2 \
    --lr 3e-3 --patience 10 --device cpu
python3 -m rog attack "$W/runs/clean" --eps 4 8 12 16 --attacks apgd-ce apgd-dlr apgd-t --iters 5 20 --device cpu
python3 - "$W/attacks/clean-patch/results.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print("eps  " + "  ".join(f"{a:>12}" for a in sorted(doc["summary"]["eps"]["4.0"]["attacks"])))
for eps, v in sorted(doc["summary"]["eps"].items(), key=lambda kv: float(kv[0])):
    print(f"{float(eps):>4g} " + "  ".join(f"{v['attacks'][a]:>12.3f}" for a in sorted(v["attacks"])))
print("clean", round(doc["summary"]["clean_dice"], 3), "cases", sorted(doc["clean"]), doc["meta"]["cases_source"])
PY
