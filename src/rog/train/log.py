"""Training log: a CSV rewritten atomically each epoch and a PNG of the training curves."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from rog.atomic import atomic_path, write_text
from rog.rundir import RunDir

COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds", "adv_ratio", "eps_scale",
           # `--select robust` (rog.train.selection): checkpoint_best is the epoch of the best score
           "val_whole_dice", "val_robust_dice", "selection_score"]


def write_log(run: RunDir, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    write_text(run.log, buf.getvalue())
    plot_curves(run.curves, history)


def plot_curves(path: Path, history: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(epochs, [h["val_dice"] for h in history], color="C2", label="validation Dice")
    b.set_ylim(0, 1)
    b.set_xlabel("epoch")
    b.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
