"""Worker processes for the per-case stages (fingerprint, preprocessing).

Workers ask the kernel to end them when their parent dies (Linux `PR_SET_PDEATHSIG`), so a
killed `rog preprocess` leaves no orphans behind to keep writing; elsewhere the request is
skipped and workers end with their queue as usual.
"""
from __future__ import annotations

import ctypes
import signal
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux/glibc
        pass


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of `workers` processes that do not outlive this one."""
    return ProcessPoolExecutor(workers, initializer=_die_with_parent)
