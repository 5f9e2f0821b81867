"""Figures of the report (matplotlib, PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rog.atomic import atomic_path
from rog.evaluate.robustness import auc
from rog.evaluate.seeds import SeedGroup
from rog.results import ArtefactSummary, CorruptionSummary


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    # 120 dpi: a 4-inch panel is about 500 pixels, its 9-point legend 15 pixels high, read on a
    # laptop screen at the page's natural size
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    _plt().close(fig)


def _grid(n: int, width: float, height: float):
    """(figure, axes `[rows, cols]`) of `n` panels of `width` x `height` inches, three to a row."""
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = _plt().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                                layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def dice_vs_eps(path: Path, models: dict[str, tuple[list, list, list]], class_names: list[str],
                xlabel: str = "eps (/255)") -> dict[str, float]:
    """Figure 1/4: worst-case Dice vs eps, one panel per model (name -> (eps, mean Dice,
    per-class Dice lists)), one curve per class and the mean; returns each model's normalised
    AUC of the mean curve. `xlabel` names eps's unit (every eps figure takes it)."""
    fig, axes = _grid(len(models), 4.2, 3.6)
    aucs = {}
    for ax, (name, (eps, mean, per_class)) in zip(axes.flat, models.items()):
        aucs[name] = auc(eps, mean)
        for k, cname in enumerate(class_names):
            ax.plot(eps, [c[k] for c in per_class], marker="o", label=cname)
        ax.plot(eps, mean, "k--", marker="s", label=f"mean (AUC {aucs[name]:.2f})")
        _panel(ax, xlabel, name)
    for row in axes:
        row[0].set_ylabel("worst-case Dice")
    _save(fig, path)
    return aucs


def across_seeds(path: Path, groups: dict[str, SeedGroup], xlabel: str = "eps (/255)") -> None:
    """Worst-case Dice vs eps per model: mean over seeds with a +-sd band, and every seed's
    per-case points (eps 0 = clean), from `rog.evaluate.seeds.across_seeds` groups."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    rng = np.random.default_rng(0)  # jitter only, so points of one eps do not overlap
    for i, (name, g) in enumerate(groups.items()):
        eps = [0.0] + [float(k) for k in g.eps]
        mean = np.array([g.clean_dice.mean] + [v.mean for v in g.eps.values()])
        sd = np.array([g.clean_dice.sd] + [v.sd for v in g.eps.values()])
        ax.plot(eps, mean, color=f"C{i}", marker="o",
                label=f"{name} ({len(g.seeds)} seeds, AUC {g.auc_worst_case.mean:.2f} +- {g.auc_worst_case.sd:.2f})")
        ax.fill_between(eps, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
        for k, pts in g.points.items():
            x = float(k) + (i - (len(groups) - 1) / 2) * 0.35 + rng.uniform(-0.1, 0.1, len(pts))
            ax.scatter(x, [p[2] for p in pts], s=9, color=f"C{i}", alpha=0.5)
    _panel(ax, xlabel, ylabel="worst-case Dice", legend_size=8)
    _save(fig, path)


def _panel(ax, xlabel: str, title: str | None = None, ylabel: str | None = None, legend_size: int = 9) -> None:
    """Labels, Dice's [0, 1] limits, grid and legend of one Dice panel."""
    if title is not None:
        ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)


def pgd_vs_apgd(path: Path, curves: dict[str, dict[str, tuple[list, list]]],
                xlabel: str = "eps (/255)") -> dict[str, dict[str, float]]:
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
    _panel(ax, xlabel, ylabel="mean Dice")
    _save(fig, path)
    return aucs


def qualitative(path: Path, panels: list[tuple[str, dict]], num_classes: int, what: str = "adversarial",
                class_names: list[str] | None = None) -> None:
    """Figure 5: per model (row title, arrays), image slice, ground truth, clean and perturbed
    predictions and the perturbation: the 2-D arrays the benchmark recorded in
    qualitative.npz (`bench.records.qualitative_slice`: one slice per case for every model,
    what made the perturbation, its size on the threat's /255 scale; older files hold input
    units and no name). `what` names the perturbed input ("adversarial", or "worst artefact"
    for the artefact sweep's panels); the classes' colours are named below the panels."""
    plt = _plt()
    from matplotlib.patches import Patch
    cols = ["image", "ground truth", "clean prediction", f"{what} prediction",
            "perturbation" if what == "adversarial" else "its change"]
    fig, axes = plt.subplots(len(panels), 5, figsize=(14, 2.9 * len(panels) + 0.6), squeeze=False,
                             layout="constrained")
    vmax = num_classes - 1  # one colour per class in every row, whatever a slice holds
    cmap = plt.get_cmap("viridis")
    for r, (title, p) in enumerate(panels):
        row = axes[r]
        images = [p["image"], p["gt"], p["clean"], p["adv"], p["delta"]]
        for j, (ax, im) in enumerate(zip(row, images)):
            if j == 0:
                ax.imshow(im.T, cmap="gray", origin="lower")
            elif j == 4:
                lim = float(np.abs(im).max()) or 1.0
                shown = ax.imshow(im.T, cmap="seismic", vmin=-lim, vmax=lim, origin="lower")
                bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
                bar.set_label("/255 of the range" if "winner" in p else "input units", fontsize=8)
            else:
                ax.imshow(im.T, cmap=cmap, vmin=0, vmax=vmax, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[j], fontsize=10)
        winner = f"\n{p['winner']}" if "winner" in p and str(p["winner"]) else ""
        row[0].set_ylabel(f"{title}, slice {int(p['slice'])}{winner}", fontsize=9)
    names = ["background", *(class_names or [f"class {k}" for k in range(1, num_classes)])]
    fig.legend(handles=[Patch(color=cmap(k / max(vmax, 1)), label=n) for k, n in enumerate(names[:num_classes])],
               loc="outside lower center", ncol=min(num_classes, 6), fontsize=9)
    _save(fig, path)


def brackets(path: Path, models: dict[str, list]) -> None:
    """Certified vs attacked Dice over the L2 radius, one panel per model (name -> its
    `rog.evaluate.bracket.Bracket` per noise level), per noise level one colour: the certified
    lower bound (solid) and the smoothed labels' Dice (a star at r = 0); in black dashed, the
    base model's worst case under the L2 attacks (at the radii where every case was attacked).
    Every noise level shares the configuration's radii."""
    fig, axes = _grid(len(models), 4.6, 3.8)
    for ax, (name, per_sigma) in zip(axes.flat, models.items()):
        hit = [p for p in per_sigma[0].points if p.attacked is not None]  # the base model's: one for every sigma
        if len(hit) > 1:
            ax.plot([p.radius for p in hit], [p.attacked for p in hit], "k--", marker="s", label="base model attacked")
        for i, b in enumerate(per_sigma):
            ax.plot([p.radius for p in b.points], [p.certified for p in b.points], "-", color=f"C{i}", marker="o",
                    label=f"certified, sigma {b.sigma:g}")
            ax.plot([0], [b.smoothed_dice], "*", color=f"C{i}", ms=11, label=f"smoothed Dice, sigma {b.sigma:g}")
        _panel(ax, "L2 radius r (range-normalised scale)", name, legend_size=8)
    for row in axes:
        row[0].set_ylabel("mean Dice")
    _save(fig, path)


def _severity_panels(path: Path, summaries: dict, draw, ylabel: str) -> None:
    """One panel per model of mean Dice vs severity: `draw(ax, summary)` plots its curves."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.6), squeeze=False,
                             layout="constrained")
    for ax, (name, s) in zip(axes[0], summaries.items()):
        draw(ax, s)
        _panel(ax, "severity", name, legend_size=8)
    axes[0][0].set_ylabel(ylabel)
    _save(fig, path)


def dice_vs_severity(path: Path, summaries: dict[str, CorruptionSummary]) -> None:
    """Corruptions: mean Dice vs severity (0 = clean), one panel per model, one curve per
    corruption (ROOD-MRI's degradation curves)."""
    def draw(ax, s: CorruptionSummary):
        for c, v in s.corruptions.items():
            levels = v.levels()
            ax.plot([0, *map(int, levels)], [s.clean_dice, *(v.severity[k] for k in levels)], marker="o", label=c)
    _severity_panels(path, summaries, draw, "mean Dice")


def random_vs_worst(path: Path, summaries: dict[str, ArtefactSummary]) -> None:
    """Worst-case artefacts: mean Dice vs severity (0 = clean), one panel per model, per
    artefact the mean random draw (dashed) and the worst case (solid) in one colour; tau dotted."""
    def draw(ax, s: ArtefactSummary):
        for i, (a, v) in enumerate(s.artefacts.items()):
            x = [0, *map(int, v.levels())]
            ax.plot(x, [s.clean_dice, *(v.random[k] for k in v.levels())], "--", color=f"C{i}", alpha=0.7)
            ax.plot(x, [s.clean_dice, *(v.worst[k] for k in v.levels())], "-", color=f"C{i}", marker="o", label=a)
        ax.axhline(s.tau, color="grey", lw=0.8, ls=":")
    _severity_panels(path, summaries, draw, "mean Dice (dashed: random draw; solid: worst case)")
