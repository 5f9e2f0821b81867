"""An ensemble of nnU-Net configurations as `nnUNetv2_ensemble` deploys it: each configuration
predicts the scan as `nnUNetv2_predict` does (its folds, its mirroring, no post-processing),
the softmax probabilities in the scan's geometry are averaged, the label is their argmax,
and the post-processing `nnUNetv2_find_best_configuration` chose for the ensemble follows.

The attacked function returns the log of the averaged probabilities (a logsumexp of each
configuration's log-softmax, exact where probabilities underflow): its argmax is the
ensemble's label, its softmax the ensemble's probabilities, so the attacks' losses are those
of the deployed ensemble and the gradient passes every configuration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from rog.bench.cases import BenchCase
from rog.external import nnunet_post
from rog.external.model import ExternalError
from rog.external.nnunet import NnUNetModel, load_nnunet
from rog.external.nnunet_scan import ScanPipeline
from rog.infer.sliding_window import tile
from rog.results import ModelInfo


class EnsemblePipeline(nn.Module):
    """nnUNetv2_ensemble of one case: x `[1, C, *shape]` (the scan as nnU-Net's reader gives
    it) -> log of the configurations' mean probabilities `[1, K, *shape]` (the module's note).
    `members`: each configuration's whole-volume model (its tiled folds), `deployments` theirs,
    `spacing` the case's; `post`: the ensemble's post-processing or None."""

    def __init__(self, members: nn.ModuleList, spacing, deployments, post=None):
        super().__init__()
        self.pipelines = nn.ModuleList(ScanPipeline(m, spacing, d) for m, d in zip(members, deployments))
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a running logsumexp: one configuration's volume of log-probabilities beside the sum
        total = None
        for pipeline in self.pipelines:
            logp = pipeline(x).log_softmax(1)
            total = logp if total is None else torch.logaddexp(total, logp)
        out = total - math.log(len(self.pipelines))
        return out if self.post is None else self.post(out)


@dataclass
class NnUNetEnsemble(NnUNetModel):
    """Configurations of one nnU-Net dataset ensembled (`members`, each an `NnUNetModel`
    without post-processing, loaded from `folders`); `network` is the `nn.ModuleList` of their whole-volume models
    (so `patch` is None: each configuration tiles its own), the first member's reader and
    labels read the cases."""

    members: list = field(default_factory=list)
    folders: list = field(default_factory=list)

    def inference(self) -> dict:
        parts = [f"{d.name.split('__')[-1]} ({m.settings()})" for d, m in zip(self.folders, self.members)]
        text = ("as nnUNetv2_ensemble of " + " and ".join(parts) + ": probabilities averaged; "
                + self._post_text("probabilities") + self._background_text())
        first = self.members[0].inference()
        return {**first, "configurations": [m.inference() for m in self.members],
                "postprocessing": self.post.source if self.post else None, "text": text}

    def load_cases(self, images, labels, names=None, max_cases=None, device="cpu") -> list[BenchCase]:
        cases = self.members[0].load_cases(images, labels, names, max_cases, device)
        self.scan_files.update(self.members[0].scan_files)
        for case in cases:
            case.around = partial(EnsemblePipeline, spacing=case.spacing,
                                  deployments=[m.deployment for m in self.members], post=self.post)
        return cases

    def summary(self, shape) -> ModelInfo:
        """Parameters of every fold of every configuration; GFLOPs of one window of each
        (`input`: the first configuration's window)."""
        rows = [m.summary(shape) for m in self.members]
        return ModelInfo(self.name, sum(r.parameters for r in rows), sum(r.gflops for r in rows), rows[0].input)


def load_nnunet_ensemble(model_dirs: list[str | Path], folds: list | None = None, tta: bool = True,
                         overlap: float = 0.5, postprocessing: str | Path | None = "auto",
                         perturb_background: bool = False) -> NnUNetEnsemble:
    """Two or more configuration folders of one nnU-Net dataset as `nnUNetv2_ensemble` deploys
    their predictions (the module's note).

    Args:
        model_dirs: trained configuration folders, .../DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION.
        folds, tta, overlap, perturb_background: as `load_nnunet`, for every configuration.
        postprocessing: "auto": the ensemble's post-processing where `nnUNetv2_find_best_configuration`
            wrote it (`default_file`); a postprocessing.json or .pkl; None: none.

    Returns:
        An `NnUNetEnsemble`.

    Raises:
        ExternalError naming the folder: one `load_nnunet` refuses, or configurations of
        different datasets (labels, channels or file ending differ).
    """
    dirs = [Path(d) for d in model_dirs]
    members = [load_nnunet(d, folds, tta=tta, overlap=overlap, postprocessing=None,
                           perturb_background=perturb_background) for d in dirs]
    first = members[0]
    for d, m in zip(dirs[1:], members[1:]):
        for key in ("labels", "channel_names", "file_ending"):
            if m.dataset_json.get(key) != first.dataset_json.get(key):
                raise ExternalError(f"{d / 'dataset.json'}: its {key} differ from {dirs[0] / 'dataset.json'}'s: "
                                    "an ensemble is of configurations of one dataset")
    if postprocessing == "auto":
        postprocessing = default_file(dirs, [m.folds for m in members])
    post = nnunet_post.read(postprocessing) if postprocessing else None
    networks = nn.ModuleList(tile(m.network, m.patch, **m.window) for m in members)
    weights = [w for m in members for w in (m.weights if isinstance(m.weights, list) else [m.weights])]
    return NnUNetEnsemble(
        name=f"nnU-Net ensemble {dirs[0].parent.name}/{'+'.join(d.name for d in dirs)}", network=networks, patch=None,
        num_channels=first.num_channels, class_names=first.class_names, weights=weights, window={},
        plans=first.plans, configuration=first.configuration, dataset_json=first.dataset_json, labels=first.labels,
        deployment=first.deployment, folds=first.folds, post=post, perturb_background=perturb_background,
        members=members, folders=dirs)


def default_file(model_dirs: list[Path], folds: list[list]) -> Path | None:
    """Where `nnUNetv2_find_best_configuration` writes an ensemble's post-processing:
    DatasetXXX/ensembles/ensemble___A___B___F1_F2.../postprocessing.json (or .pkl), for
    configurations of one dataset with the same folds; None if there is none."""
    if len({d.parent for d in model_dirs}) != 1 or any(f != folds[0] for f in folds):
        return None
    name = "___".join(["ensemble", *(d.name for d in model_dirs), "_".join(map(str, folds[0]))])
    return nnunet_post.first_file(model_dirs[0].parent / "ensembles" / name)
