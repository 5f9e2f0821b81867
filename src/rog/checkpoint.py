"""Checkpoints and run directories.

A run directory (`rog.rundir.RunDir`) holds the plan the model was built from, the training
config (including the model name) and the best and last checkpoints. Checkpoints are written
atomically and read with `weights_only=True`: loading one never runs pickled code. A
TorchScript archive (a whole model, `torch.jit.save`) is loaded by `torch.jit.load`, which runs
TorchScript's own restricted code, not pickled Python.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from rog.atomic import atomic_path
from rog.errors import RogError
from rog.plan import Plan
from rog.rundir import RunDir


class CheckpointError(RogError):
    """A checkpoint or run directory is missing or unusable; the message names the file."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # a truncated archive still starts so; a text file does not
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state


def _model_weights(state: dict) -> dict:
    weights = state.get("model", state)
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError("checkpoint holds no model state dict under 'model'")
    return weights


def is_torchscript(path: str | Path) -> bool:
    """Whether `path` is a TorchScript archive (its zip holds TorchScript's code/ and
    constants.pkl; a `torch.save` state dict holds neither)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def load_torchscript(path: str | Path) -> nn.Module:
    """The whole model a TorchScript archive holds, on the CPU, in eval mode."""
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001 - TorchScript's own error, with the file named
        raise CheckpointError(f"{path}: unreadable TorchScript model ({str(e).strip().splitlines()[0]})") from e


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict (bare, or under 'model') into `model`; mismatches name the file."""
    weights = _model_weights(load_checkpoint(path))
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit the model ({str(e).splitlines()[0]})") from e
    return model


def load_run(run_dir: str | Path, which: str = "best") -> tuple[nn.Module, Plan, dict]:
    """(model in eval mode with the run's weights, its plan, its config) from a run directory."""
    from rog.models.registry import build_model

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise CheckpointError(f"{run}: run directory not found")
    plan = Plan.load(run.plan)
    config = run.read_config()
    model = build_model(plan, config.get("model", plan.model))
    load_weights(model, run.weights() if which == "best" else run.checkpoint(which))
    return model.eval(), plan, config


def load_external(model_spec: str | None, checkpoint: str | Path | None,
                  plan_path: str | Path) -> tuple[nn.Module, Plan]:
    """Any registered or `package.module:factory` model with optional weights (a state dict),
    or, without `model_spec`, the TorchScript model `checkpoint`, for attacks and prediction on
    models rog did not train."""
    from rog.models.registry import build_model

    plan = Plan.load(plan_path)
    scripted = checkpoint is not None and Path(checkpoint).is_file() and is_torchscript(checkpoint)
    if scripted != (model_spec is None):
        raise CheckpointError(f"{checkpoint}: a TorchScript file is the whole model: give it without --model"
                              if scripted else "--model (a registered name or package.module:factory) or a "
                              "TorchScript --checkpoint: give one")
    if scripted:
        return load_torchscript(checkpoint), plan
    model = build_model(plan, model_spec)
    if checkpoint:
        load_weights(model, checkpoint)
    return model.eval(), plan
