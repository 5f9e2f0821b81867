"""Device choice and the distributed process group, shared by training, attacks and the CLI."""
from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when available, else the CPU; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; joins the process group when the world
    has more than one process (NCCL on GPU, gloo on CPU)."""
    import torch.distributed as dist
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world
