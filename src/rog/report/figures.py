"""Figures of the report (matplotlib, PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rog.atomic import atomic_path
from rog.evaluate.robustness import auc


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight")
    _plt().close(fig)


def dice_vs_eps(path: Path, models: dict[str, dict], class_names: list[str]) -> dict[str, float]:
    """Figure 1/4: worst-case Dice vs eps, one panel per model, one curve per class and the
    mean; returns each model's normalised AUC of the mean curve."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    aucs = {}
    for ax, (name, m) in zip(axes[0], models.items()):
        eps, mean, per_class = m["curve_eps"], m["curve_mean"], m["curve_classes"]
        aucs[name] = auc(eps, mean)
        for k, cname in enumerate(class_names):
            ax.plot(eps, [c[k] for c in per_class], marker="o", label=cname)
        ax.plot(eps, mean, "k--", marker="s", label=f"mean (AUC {aucs[name]:.2f})")
        ax.set_title(name)
        ax.set_xlabel("eps (/255)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("worst-case Dice")
    _save(fig, path)
    return aucs


def pgd_vs_apgd(path: Path, curves: dict[str, dict[str, tuple[list, list]]]) -> dict[str, dict[str, float]]:
    """Figure 3: mean Dice vs eps under PGD and APGD-CE for each model, with both AUCs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    aucs: dict[str, dict[str, float]] = {}
    for i, (model, per_attack) in enumerate(curves.items()):
        for style, attack in (("-", "pgd"), ("--", "apgd-ce")):
            if attack not in per_attack:
                continue
            eps, dice = per_attack[attack]
            a = auc(eps, dice)
            aucs.setdefault(model, {})[attack] = a
            ax.plot(eps, dice, style, color=f"C{i}", marker="o", label=f"{model} {attack.upper()} (AUC {a:.2f})")
    ax.set_xlabel("eps (/255)")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return aucs


def qualitative(path: Path, panels: list[dict], num_classes: int) -> None:
    """Figure 5: per model, image slice, ground truth, clean and adversarial predictions and
    the perturbation: the 2-D arrays the benchmark recorded (`bench.records.qualitative_slice`)."""
    plt = _plt()
    cols = ["image", "ground truth", "clean prediction", "adversarial prediction", "perturbation"]
    fig, axes = plt.subplots(len(panels), 5, figsize=(13, 2.6 * len(panels)), squeeze=False)
    for r, p in enumerate(panels):
        row = axes[r]
        z = int(p["slice"])
        vmax = num_classes - 1  # one colour per class in every row, whatever a slice holds
        images = [p["image"], p["gt"], p["clean"], p["adv"], p["delta"]]
        for j, (ax, im) in enumerate(zip(row, images)):
            if j == 0:
                ax.imshow(im.T, cmap="gray", origin="lower")
            elif j == 4:
                lim = float(np.abs(im).max()) or 1.0
                ax.imshow(im.T, cmap="seismic", vmin=-lim, vmax=lim, origin="lower")
            else:
                ax.imshow(im.T, cmap="viridis", vmin=0, vmax=vmax, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[j], fontsize=9)
        row[0].set_ylabel(f"{p['model']}\n{p['case']}, slice {z}", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def dice_vs_severity(path: Path, summaries: dict[str, dict]) -> None:
    """Corruptions: mean Dice vs severity (0 = clean), one panel per model, one curve per
    corruption (ROOD-MRI's degradation curves)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.6), squeeze=False)
    for ax, (name, s) in zip(axes[0], summaries.items()):
        for c, v in s["corruptions"].items():
            levels = sorted(v["severity"], key=int)
            ax.plot([0, *map(int, levels)], [s["clean_dice"], *(v["severity"][k] for k in levels)], marker="o", label=c)
        ax.set_title(name)
        ax.set_xlabel("severity")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean Dice")
    _save(fig, path)
