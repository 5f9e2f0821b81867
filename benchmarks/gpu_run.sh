#!/usr/bin/env bash
# The one prepared GPU run (device tool): every benchmark on CUDA, then the same on that
# machine's CPU for a same-run ratio. MONAI travels as a wheel in .whl (pure Python).
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
OUT=${OUT:-/tmp/rog_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, os; print('torch', torch.__version__, 'cpu threads', torch.get_num_threads(), 'cores', os.cpu_count())"
    # CUDA: everything; the host's CPU: training step (fp32) and attacks, for same-run ratios
    timeout 150 python3 benchmarks/train_step.py --device cuda --repeats 10 --json "$OUT/train_cuda.json"
    timeout 90 python3 benchmarks/attacks.py --device cuda --repeats 10 --json "$OUT/attacks_cuda.json"
    timeout 90 python3 benchmarks/sliding_window.py --device cuda --repeats 10 --json "$OUT/sw_cuda.json"
    timeout 120 python3 benchmarks/train_step.py --device cpu --repeats 3 --precisions fp32 --json "$OUT/train_cpu.json"
    timeout 90 python3 benchmarks/attacks.py --device cpu --repeats 3 --queries 20 --json "$OUT/attacks_cpu.json"
} 2>&1 | tee "$OUT/log.txt"
