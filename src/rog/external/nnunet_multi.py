"""Models of several nnU-Net configurations of one dataset, each configuration predicted as
`nnUNetv2_predict` predicts it (its folds, its mirroring, no post-processing of its own):

- an ensemble, as `nnUNetv2_ensemble` deploys it: the softmax probabilities in the scan's
  geometry averaged, the label their argmax, then the post-processing that
  `nnUNetv2_find_best_configuration` chose for the ensemble. The attacked function returns
  the log of the averaged probabilities (a logsumexp of each configuration's log-softmax,
  exact where probabilities underflow): its argmax is the ensemble's label, its softmax the
  ensemble's probabilities, so the attacks' losses are the deployed ensemble's and the
  gradient passes every configuration;
- a cascade (3d_cascade_fullres): the low-resolution stage's segmentation of the scan, as
  nnU-Net's preprocessor hands it on, is the full-resolution network's extra input
  (`ScanPipeline._previous_stage`); its value is the label map exactly, its gradient that of
  the low-resolution stage's probabilities, so the attack moves both stages.
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
from rog.external.nnunet import CHECKPOINT, NnUNetModel, folds_text, load_configuration, load_nnunet
from rog.external.nnunet_scan import ScanPipeline
from rog.results import ModelInfo


class EnsemblePipeline(nn.Module):
    """nnUNetv2_ensemble of one case: x `[1, C, *shape]` (the scan as nnU-Net's reader gives
    it) -> log of the configurations' mean probabilities `[1, K, *shape]` (the module's note).
    `members`: each configuration's whole-volume model, `arounds` each one's inference of the
    case around it (`NnUNetModel.around`); `post`: the ensemble's post-processing or None."""

    def __init__(self, members: nn.ModuleList, arounds, post=None):
        super().__init__()
        self.pipelines = nn.ModuleList(around(m) for m, around in zip(members, arounds))
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a running logsumexp: one configuration's volume of log-probabilities beside the sum
        total = None
        for pipeline in self.pipelines:
            logp = pipeline(x).log_softmax(1)
            total = logp if total is None else torch.logaddexp(total, logp)
        out = total - math.log(len(self.pipelines))
        return out if self.post is None else self.post(out)


def cascade(members: nn.ModuleList, spacing, deployments, post=None) -> ScanPipeline:
    """A cascade's inference of one case, x `[1, C, *shape]` -> logits `[1, K, *shape]`:
    `members` the two stages' whole-volume models (low resolution first), `deployments`
    theirs, `spacing` the case's, `post` the cascade's post-processing or None."""
    previous = ScanPipeline(members[0], spacing, deployments[0])
    return ScanPipeline(members[1], spacing, deployments[1], post=post, previous=previous)


@dataclass
class MultiConfiguration(NnUNetModel):
    """Configurations of one nnU-Net dataset deployed together (`members`, each an
    `NnUNetModel` without post-processing, loaded from `folders`); `network` is the
    `nn.ModuleList` of their whole-volume models (so `patch` is None: each configuration tiles
    its own); the first member's reader and labels read the cases."""

    members: list = field(default_factory=list)
    folders: list = field(default_factory=list)

    def whole(self) -> nn.Module:
        return self.network

    def settings(self) -> str:
        return " and ".join(self.configurations())

    def configurations(self) -> list[str]:
        """The phrase of each member: its configuration name and settings."""
        return [f"{d.name.split('__')[-1]} ({m.settings()})" for d, m in zip(self.folders, self.members)]

    def _inference(self, text: str) -> dict:
        first = self.members[0].inference()
        return {**first, "configurations": [m.inference() for m in self.members],
                "postprocessing": self.post.source if self.post else None,
                "text": text + self._background_text() + self._regions_text()}

    def load_cases(self, images, labels, names=None, max_cases=None, device="cpu") -> list[BenchCase]:
        cases = self.members[0].load_cases(images, labels, names, max_cases, device)
        self.scan_files.update(self.members[0].scan_files)
        for case in cases:
            case.around = self.around(case.spacing)
        return cases

    def summary(self, shape) -> ModelInfo:
        """Parameters of every fold of every configuration; GFLOPs of one window of each
        (`input`: the first configuration's window)."""
        rows = [m.summary(shape) for m in self.members]
        return ModelInfo(self.name, sum(r.parameters for r in rows), sum(r.gflops for r in rows), rows[0].input)

    @classmethod
    def of(cls, members: list[NnUNetModel], folders: list[Path], name: str, post, **more) -> "MultiConfiguration":
        """The model of `members` (loaded from `folders`) with post-processing `post`."""
        first = members[0]
        networks = nn.ModuleList(m.whole() for m in members)
        weights = [w for m in members for w in (m.weights if isinstance(m.weights, list) else [m.weights])]
        return cls(name=name, network=networks, patch=None, num_channels=first.num_channels,
                   class_names=first.class_names, weights=weights, window={}, plans=first.plans,
                   configuration=first.configuration, dataset_json=first.dataset_json, labels=first.labels,
                   deployment=first.deployment, folds=first.folds, post=post,
                   perturb_background=first.perturb_background, members=members, folders=folders, **more)


@dataclass
class NnUNetEnsemble(MultiConfiguration):
    """An ensemble of configurations (the module's note)."""

    def around(self, spacing):
        return partial(EnsemblePipeline, arounds=[m.around(spacing) for m in self.members], post=self.post)

    def inference(self) -> dict:
        return self._inference("as nnUNetv2_ensemble of " + " and ".join(self.configurations())
                               + ": probabilities averaged; " + self._post_text("probabilities"))


@dataclass
class NnUNetCascade(MultiConfiguration):
    """A cascade, low-resolution stage first (the module's note)."""

    def around(self, spacing):
        return partial(cascade, spacing=spacing, deployments=[m.deployment for m in self.members], post=self.post)

    def inference(self) -> dict:
        low, full = self.configurations()
        return self._inference(f"as nnUNetv2_predict of {full} on the segmentation of {low} (its label map's "
                               "gradient through its probabilities); " + self._post_text("logits"))


def cascade_of(stage: NnUNetModel, model_dir: Path, folds: list | None, tta: bool,
               checkpoint: str = CHECKPOINT) -> NnUNetCascade:
    """The cascade whose full-resolution stage is `stage` (loaded from `model_dir`, with the
    post-processing of the cascade): its previous stage from the sibling folder
    TRAINER__PLANS__PREVIOUS, loaded with the same `folds` and `tta`, as a user of
    `nnUNetv2_predict -prev_stage_predictions` would have predicted it. ExternalError naming
    the folder if it is missing."""
    previous = stage.configuration.previous_stage_name
    trainer, plans, _ = model_dir.name.split("__")
    folder = model_dir.parent / f"{trainer}__{plans}__{previous}"
    if not folder.is_dir():
        raise ExternalError(f"{folder}: missing: {model_dir.name} is a cascade stage on {previous}'s segmentation")
    low = load_configuration(folder, folds, tta, stage.window["overlap"], None, stage.perturb_background, checkpoint)
    post, stage.post = stage.post, None
    return NnUNetCascade.of([low, stage], [folder, model_dir],
                            f"nnU-Net cascade {model_dir.parent.name}/{model_dir.name} on {previous} "
                            f"{folds_text(stage.folds)}", post)


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
    return NnUNetEnsemble.of(members, dirs, f"nnU-Net ensemble {dirs[0].parent.name}/{'+'.join(d.name for d in dirs)}",
                             post)


def default_file(model_dirs: list[Path], folds: list[list]) -> Path | None:
    """Where `nnUNetv2_find_best_configuration` writes an ensemble's post-processing:
    DatasetXXX/ensembles/ensemble___A___B___F1_F2.../postprocessing.json (or .pkl), for
    configurations of one dataset with the same folds; None if there is none."""
    if len({d.parent for d in model_dirs}) != 1 or any(f != folds[0] for f in folds):
        return None
    name = "___".join(["ensemble", *(d.name for d in model_dirs), "_".join(map(str, folds[0]))])
    return nnunet_post.first_file(model_dirs[0].parent / "ensembles" / name)
