"""Device choice and the distributed process group, shared by training, attacks and the CLI."""
from __future__ import annotations

import os

import torch

from rog.errors import RogError


class DeviceError(RogError):
    """A device that does not exist, or is not there on this machine (CUDA on a CPU build)."""


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when available, else Apple's mps, else the CPU; any other name as given,
    checked: a device this torch or this machine lacks is a `DeviceError` naming it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"--device {name}: not a device; 'auto', 'cpu', 'cuda', "
                          "'cuda:N' or 'mps'") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"--device {name}: CUDA is not available ({build}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not _mps():
        raise DeviceError(f"--device {name}: Apple's mps is not available here; use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: rog runs on 'cpu', 'cuda' or 'mps'")
    return device


def init_distributed() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; joins the process group when the world
    has more than one process (NCCL on GPU, gloo on CPU)."""
    import torch.distributed as dist
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world
