"""nnU-Net's post-processing in the attacked function: the connected-component steps that
`nnUNetv2_find_best_configuration` chose for a model (its postprocessing.json, or the
postprocessing.pkl beside it), applied by nnU-Net's own functions to the label map that the
deployed model would write.

What is scored is then the post-processed segmentation, as a user of the model sees it. The
post-processing is a step function of the labels, so no gradient passes it: the forward pass
gives logits whose argmax is the post-processed label map (a voxel the post-processing moved
gets logits that make its new label win), and the backward pass takes the gradient of the
logits before it (`straight_through`), the same gradient the attack follows without
post-processing.
"""
from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rog.errors import read_json_object
from rog.external.model import ExternalError
from rog.infer.sliding_window import straight_through

MODULE = "nnunetv2.postprocessing.remove_connected_components"
# the functions nnU-Net's post-processing search can choose, all in MODULE
FUNCTIONS = ("remove_all_but_largest_component_from_segmentation",)


@dataclass(frozen=True)
class PostProcessing:
    """nnU-Net's post-processing steps: function names of `FUNCTIONS` with their kwargs, in
    order, read from `source`."""

    functions: tuple[str, ...]
    kwargs: tuple[dict, ...]
    source: str

    def labels(self, seg: np.ndarray) -> np.ndarray:
        """The post-processed label map of `seg` `[*spatial]` (int), by nnU-Net's functions."""
        module = importlib.import_module(MODULE)
        for name, kwargs in zip(self.functions, self.kwargs):
            seg = getattr(module, name)(seg, **kwargs)
        return seg

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits `[1, K, *spatial]` -> logits of the same shape whose argmax is the
        post-processed label map; their gradient is that of `logits` (the module's note)."""
        seg = logits.detach().argmax(1)
        kept = torch.from_numpy(self.labels(seg[0].cpu().numpy())).to(seg.device)[None]
        moved = kept != seg
        if not bool(moved.any()):
            return logits
        value = logits.detach()
        # a moved voxel's new label one logit above every class: argmax picks it, softmax is finite
        raise_ = torch.nn.functional.one_hot(kept, value.shape[1]).movedim(-1, 1).bool() & moved[:, None]
        return straight_through(logits, torch.where(raise_, value.amax(1, keepdim=True) + 1, value))

    def describe(self) -> str:
        """One phrase: what it does, and from which file."""
        steps = "; ".join(f"largest component of {k.get('labels_or_regions')}" for k in self.kwargs)
        return f"nnU-Net's post-processing ({steps or 'no step'}) from {self.source}"


def default_file(model_dir: Path, folds: list) -> Path | None:
    """Where `nnUNetv2_find_best_configuration` writes the post-processing of `folds` of this
    model: crossval_results_folds_F1_F2.../postprocessing.json (or .pkl); None if neither is."""
    return first_file(model_dir / f"crossval_results_folds_{'_'.join(map(str, folds))}")


def first_file(folder: Path) -> Path | None:
    """folder/postprocessing.json, else folder/postprocessing.pkl, else None: what
    `nnUNetv2_find_best_configuration` wrote there."""
    return next((f for f in (folder / "postprocessing.json", folder / "postprocessing.pkl") if f.is_file()), None)


def read(path: str | Path) -> PostProcessing:
    """The `PostProcessing` of a postprocessing.json (the names and kwargs nnU-Net writes beside
    the pickle) or postprocessing.pkl (unpickled with only `FUNCTIONS` allowed: a pickle may
    name any callable, and loading one runs it). Anything else is an `ExternalError`."""
    path = Path(path)
    if path.suffix == ".json":
        raw = read_json_object(path, ExternalError)
        names, kwargs = raw.get("postprocessing_fns"), raw.get("postprocessing_kwargs")
    else:
        try:
            with open(path, "rb") as f:
                fns, kwargs = _Restricted(f).load()
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise ExternalError(f"{path}: not a readable nnU-Net postprocessing.pkl ({e})") from e
        names = [fn.__name__ for fn in fns]
    if not isinstance(names, list) or not isinstance(kwargs, list) or len(names) != len(kwargs):
        raise ExternalError(f"{path}: expected nnU-Net's postprocessing functions and their kwargs")
    unknown = sorted(set(names) - set(FUNCTIONS))
    if unknown:
        raise ExternalError(f"{path}: post-processing {unknown}: rog applies {', '.join(FUNCTIONS)} only")
    return PostProcessing(tuple(names), tuple(dict(k) for k in kwargs), str(path))


class _Restricted(pickle.Unpickler):
    """Unpickles nnU-Net's (functions, kwargs) pair, resolving no global but `FUNCTIONS`."""

    def find_class(self, module: str, name: str):
        if module == MODULE and name in FUNCTIONS:
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"{module}.{name} is not one of nnU-Net's post-processing functions")
