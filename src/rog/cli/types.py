"""The argparse types and helpers of `rog`'s parser: numbers range-checked (a nonsense value
ends the command with one line naming the argument), folds, sizes, hidden aliases of renamed
options, and the help format that shows every default."""
from __future__ import annotations

import argparse
import math


def number(kind=float, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse type: a finite `kind` within [lo, hi] ((lo, hi] with `lo_open`); anything
    else ends the command with one line naming the argument."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{text} must be <= {hi:g}")
        return v
    return parse


POSITIVE_INT, COUNT = number(int, 1), number(int, 0)
# eps on the /255 scale: beyond 255 the ball holds the whole box
EPS = number(float, 0, 255, lo_open=True)


def fold(text: str):
    """An nnU-Net fold: 'all' or an integer >= 0."""
    return "all" if text == "all" else number(int, 0)(text)


def triple(text: str) -> list[int]:
    """A size or stride: '96' (every axis) or '96,96,48' (per axis)."""
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or N,N,N") from None
    if len(parts) not in (1, 3) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one positive integer or three")
    return parts * 3 if len(parts) == 1 else parts


def alias(s, old: str, dest: str, **kw) -> None:
    """`old`, a renamed option's former spelling, still accepted (for a release), not shown."""
    s.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)


def device_option(s, default="auto") -> None:
    """The `--device` option of a sub-parser `s`."""
    s.add_argument("--device", default=default,
                   help="'auto' (CUDA, else Apple's mps, else the CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'")


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where there is none to show (None, False,
    or unset: a value that comes from elsewhere, which the help then names)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
