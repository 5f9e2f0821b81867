"""Training log: a CSV rewritten atomically each epoch and a PNG of the training curves (`Curves`)."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from rog.atomic import atomic_path, write_text
from rog.rundir import RunDir

COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds", "adv_ratio", "eps_scale",
           # `--select robust` (rog.train.selection): checkpoint_best is the epoch of the best score
           "val_whole_dice", "val_robust_dice", "selection_score"]


def write_log(run: RunDir, history: list[dict]) -> None:
    """log.csv of every epoch so far (`history`: one row per epoch, `COLUMNS`), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    write_text(run.log, buf.getvalue())


class Curves:
    """curves.png, drawn at most once every `every` seconds and at the end (`draw(final=True)`):
    drawing takes about 0.4 s, as long as a short epoch, so a fast run draws its curves once,
    and a clinical one, with epochs of minutes, after every epoch as nnU-Net does."""

    def __init__(self, run: RunDir, every: float = 60.0):
        self.run, self.every, self._last = run, every, time.monotonic()

    def draw(self, history: list[dict], final: bool = False) -> None:
        if history and (final or time.monotonic() - self._last >= self.every):
            plot_curves(self.run.curves, history)
            self._last = time.monotonic()


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
