"""rog's messages to the user: the `rog` logger, written to stdout above any progress bar
(through `tqdm.write`). Library callers see its info messages as before; the CLI sets the
level for one command: `-q` warnings only, `-v` details (debug: each attack's or
corruption's result as it comes)."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from tqdm import tqdm

log = logging.getLogger("rog")


class _AboveBars(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)  # resolved now: a caller's stdout, a test's capture


if not log.handlers:
    log.addHandler(_AboveBars())
    log.setLevel(logging.INFO)
    log.propagate = False


def level_for(quiet: bool, verbose: bool) -> int:
    """The logger level of `-q` / `-v` (quiet wins)."""
    return logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO


@contextmanager
def quieter():
    """Warnings only for the duration (a stage whose details its caller summarises)."""
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)
