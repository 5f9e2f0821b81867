"""Sharding a benchmark's cases over `torchrun` ranks: rank r takes cases r, r + world, ...,
writes its own shard of records, and rank 0 merges the shards once every rank is done."""
from __future__ import annotations

import os

from rog.rundir import ResultsDir


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def wait_for_ranks() -> None:
    """Barrier across ranks where a process group is up (torchrun with init_distributed)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def merged_records(out: ResultsDir, world: int) -> list:
    """Every rank's records, in rank order."""
    return [record for r in range(world) for record in out.read(r).records]
