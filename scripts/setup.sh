#!/usr/bin/env bash
# Installs rog and its test dependencies into the current Python.
# torch: the CPU build (torch==2.13.0) only where no torch is importable, so a GPU user keeps
# their own build; every other package is installed under a constraint that holds that torch
# version (a dependency wanting torchvision would otherwise swap in a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet torch==2.13.0
fi
constraint=$(mktemp)
trap 'rm -f "$constraint"' EXIT
"$PY" -c "import torch; print('torch==' + torch.__version__)" >"$constraint"
"$PY" -m pip install --quiet -c "$constraint" -e ".[test]"
# torchattacks is the reference APGD the tests compare against. Its metadata asks for
# torchvision, which it never imports and which would replace the CPU torch: no deps.
"$PY" -m pip install --quiet --no-deps "torchattacks>=3.5"
