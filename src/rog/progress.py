"""Progress bars (tqdm), every one of them silenced by `rog --quiet`: the CLI sets ROG_QUIET,
which worker processes inherit."""
from __future__ import annotations

import os

from tqdm import tqdm

QUIET = "ROG_QUIET"


def progress_bar(iterable=None, disable: bool = False, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)`, disabled by `disable` or by ROG_QUIET=1."""
    return tqdm(iterable, disable=disable or os.environ.get(QUIET) == "1", **kwargs)
