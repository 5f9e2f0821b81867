# The full demo's seed-0 models attacked on the scans as stored and on rog's preprocessed grid
# (docs/benchmarks.md, issue 23). Usage: bash benchmarks/scan_vs_grid.sh [DEMO_WORKDIR] [OUT]
set -x
D=${1:-/tmp/demo26f}
O=${2:-/tmp/scanvs}
for m in rog_clean-s0 rog_free-s0 dynunet-s0; do
  python3 -m rog attack $D/runs/$m --images $D/data/Nuclei/imagesTs --labels $D/data/Nuclei/labelsTs --eps 2 4 8 --attacks apgd-ce --iterations 10 -o $O/$m-scan --device cpu
  python3 -m rog attack $D/runs/$m --scope volume --eps 2 4 8 --attacks apgd-ce --iterations 10 -o $O/$m-volume --device cpu
done
