"""Post-processing at clinical size: a noisy 512x512xZ label map (an organ with speckle of
small organ and lesion components, as an early model or an adversarial input predicts) through
both steps, and the earlier per-component whole-volume implementation on a small map for the
same-run ratio. Usage: python benchmarks/postprocess.py [--depth 100] [--repeats 3]"""
from __future__ import annotations

import sys
from pathlib import Path

import cc3d
import numpy as np

from common import median_time, median_times, parser, report
from rog.infer.postprocess import keep_largest_component, relabel_small_lesions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the implementation before this change: the tests' reference, one whole-volume dilation per component
from tests.test_postprocess_metrics import _relabel_reference as earlier  # noqa: E402


def noisy_map(shape, seed=0, speckle=0.004) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = np.array(shape) / 2
    lab[((z - c[0]) / (0.35 * shape[0])) ** 2 + ((y - c[1]) / (0.3 * shape[1])) ** 2
        + ((x - c[2]) / (0.4 * shape[2])) ** 2 < 1] = 1
    noise = rng.random(shape)
    lab[noise < speckle] = 2  # isolated lesion voxels, inside and outside the organ
    lab[(noise >= speckle) & (noise < 1.5 * speckle)] = 1  # spurious organ islands
    return lab


p = parser(__doc__)
p.add_argument("--depth", type=int, default=100)
args = p.parse_args()
big = noisy_map((512, 512, args.depth))
comps = {k: cc3d.connected_components(big == k, connectivity=26, return_N=True)[1] for k in (1, 2)}
limits = {2: 20.0}
rows = [{"map": f"512x512x{args.depth}", "components organ/lesion": f"{comps[1]}/{comps[2]}",
         "largest component s": median_time(lambda: keep_largest_component(big, [1]), "cpu", args.repeats),
         "small lesions s": median_time(lambda: relabel_small_lesions(big, limits), "cpu", args.repeats)}]
small = noisy_map((96, 96, 24), seed=1)
assert np.array_equal(relabel_small_lesions(small, limits), earlier(small, limits))
t = median_times({"now": lambda: relabel_small_lesions(small, limits), "earlier": lambda: earlier(small, limits)},
                 "cpu", args.repeats)
n_small = cc3d.connected_components(small == 2, connectivity=26, return_N=True)[1]
rows.append({"map": "96x96x24 (same output)", "components organ/lesion": f"-/{n_small}",
             "largest component s": float("nan"), "small lesions s": t["now"],
             "earlier s": t["earlier"], "earlier / now": t["earlier"] / t["now"]})
report("post-processing", rows, args)
