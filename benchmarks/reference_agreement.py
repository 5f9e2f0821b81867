"""rog's attacks against AutoAttack's own algorithms (torchattacks) and against each other, on
small *trained* models (the tests' fixtures, `tests/trained.py`), over several eps and seeds.

    python benchmarks/reference_agreement.py [--seeds 3] [--json out.json]

Prints three tables for docs/benchmarks.md:
1. robust accuracy of rog vs torchattacks on a trained 3D classifier presented as a segmenter
   (logits broadcast to every voxel), each attack at the same eps and budget;
2. FAB-T's minimum norm against the smallest eps at which APGD-CE breaks the instance
   (bisection), on trained 2- and 3-class segmenters;
3. binary APGD-DLR with the margin-ratio normaliser differentiated (as shipped before) and
   detached (now), beside APGD-CE.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import parser, report  # noqa: E402
from rog.attacks import APGD, FAB, Square, ThreatModel, losses  # noqa: E402
from tests.test_attack_strength import _apgd_ce_smallest_eps, _reduction, _robust_accuracy  # noqa: E402
from tests.trained import sphere_volumes, train_segmenter  # noqa: E402

import torchattacks  # noqa: E402


def agreement(seeds: int) -> list[dict]:
    rows = []
    k = 4
    for shape, names, budget in (((4, 8, 8), ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t"), 10),
                                 ((1, 12, 12), ("square",), 100)):
        clf, seg, flat, x, y = _reduction(shape, 320)
        maps = y.view(-1, 1, 1, 1).expand(-1, *shape)
        ones = torch.ones(len(x), 2, 1, 1, 1)
        image = x.reshape(len(x), 2 * shape[0], *shape[1:])
        for eps in (4.0, 8.0, 12.0, 16.0):
            e = eps / 255
            for name in names:
                ours, ref = [], []
                for seed in range(seeds if name == "square" else 1):  # the gradient attacks start alike
                    attack, reference = {
                        "apgd-ce": (APGD(seg, ThreatModel(eps), iters=budget),
                                    torchattacks.APGD(flat, eps=e, steps=budget, loss="ce")),
                        "apgd-dlr": (APGD(seg, ThreatModel(eps), iters=budget, loss="dlr"),
                                     torchattacks.APGD(flat, eps=e, steps=budget, loss="dlr")),
                        "apgd-t": (APGD(seg, ThreatModel(eps), iters=budget, loss="dlr-targeted"),
                                   torchattacks.APGDT(flat, eps=e, steps=budget, n_classes=k)),
                        "fab-t": (FAB(seg, ThreatModel(eps), iters=budget),
                                  torchattacks.FAB(flat, eps=e, steps=budget, multi_targeted=True, n_classes=k)),
                        "square": (Square(seg, ThreatModel(eps), queries=budget, seed=seed),
                                   torchattacks.Square(flat, eps=e, n_queries=budget, seed=seed)),
                    }[name]
                    ours.append(_robust_accuracy(clf, attack(x, maps, 0 * ones, ones), y))
                    ref.append(_robust_accuracy(clf, reference(image, y).view_as(x), y))
                rows.append({"attack": name, "eps": eps, "budget": budget, "instances": len(x),
                             "rog": float(np.mean(ours)), "torchattacks": float(np.mean(ref)),
                             "difference": float(np.mean(ours) - np.mean(ref))})
    return rows


def fab_norms(seeds: int) -> list[dict]:
    rows = []
    for classes in (2, 3):
        for seed in range(seeds):
            model = train_segmenter(classes, seed=seed)
            x, y = sphere_volumes(6, 16, classes, seed=99 + seed)
            smallest = _apgd_ce_smallest_eps(model, x, y, iters=20, steps=7)
            ones = torch.ones(len(x), 1, 1, 1, 1)
            fab = FAB(model, ThreatModel(64), iters=10)
            fab(x, y, 0 * ones, ones)
            ratio = np.array(fab.info["min_norm"]) / smallest
            rows.append({"classes": classes, "model seed": seed, "instances": len(x),
                         "APGD-CE smallest eps (mean)": float(smallest.mean()),
                         "FAB-T min norm (mean)": float(np.mean(fab.info["min_norm"])),
                         "ratio median": float(np.median(ratio)), "ratio max": float(ratio.max())})
    return rows


def differentiated_normaliser(logits, y):
    """The binary margin ratio as shipped before: the normaliser s inside the gradient."""
    zy = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    m = 2 * zy - logits.sum(1)
    s = m.abs().flatten(1).mean(1).view(-1, *[1] * (m.ndim - 1))
    return (-m / (m.abs() + s + 1e-12)).flatten(1).mean(1)


def binary_dlr(seeds: int) -> list[dict]:
    rows = []
    detached = losses.binary_margin_ratio
    for eps in (8.0, 16.0, 24.0):
        dice = {"apgd-ce": [], "dlr differentiated s": [], "dlr detached s": []}
        for seed in range(seeds):
            model = train_segmenter(2, seed=seed)
            x, y = sphere_volumes(6, 16, 2, seed=99 + seed)
            ones = torch.ones(len(x), 1, 1, 1, 1)
            for name, loss, fn in (("apgd-ce", "ce", detached), ("dlr differentiated s", "dlr", differentiated_normaliser),
                                   ("dlr detached s", "dlr", detached)):
                losses.binary_margin_ratio = fn  # dlr() looks the binary loss up at call time
                a = APGD(model, ThreatModel(eps), iters=5, loss=loss)
                a(x, y, 0 * ones, ones)
                dice[name].append(float(np.mean(a.info["dice"])))
        losses.binary_margin_ratio = detached
        rows.append({"eps": eps, "iterations": 5, **{k: float(np.mean(v)) for k, v in dice.items()}})
    return rows


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    args.repeats = 1  # accuracies, not times
    report("robust accuracy, rog vs torchattacks (classifier as segmenter)", agreement(args.seeds), args)
    report("FAB-T minimum norm vs APGD-CE's smallest eps (bisection)", fab_norms(args.seeds), args)
    report("binary APGD-DLR: mean Dice", binary_dlr(args.seeds), args)


if __name__ == "__main__":
    main()
