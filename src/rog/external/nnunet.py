"""nnU-Net v2 results folders as benchmark models (the optional `nnunetv2` extra).

A model folder is `.../DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION` with `dataset.json`,
`plans.json` and `fold_F/checkpoint_final.pth`. The network is built by nnU-Net's own code
(the trainer's `build_network_architecture`, as `nnUNetPredictor` does) and the checkpoint is
read with `weights_only=True`. Cases are the scans as nnU-Net's reader gives them (raw
intensities, voxels as stored) with their labels as stored; the model of a case is nnU-Net's
whole inference as one differentiable function of the scan (`rog.external.nnunet_scan`), so
eps, the box and the Dice are those of the scan, and the clean prediction is nnU-Net's own.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from rog.attacks.threat import ThreatModel
from rog.bench.cases import BenchCase
from rog.errors import read_json_object
from rog.evaluate.metrics import Regions
from rog.external import nnunet_post
from rog.external.model import ExternalError, ExternalModel
from rog.external.nnunet_scan import Deployment, ScanPipeline
from rog.infer.sliding_window import tile

CHECKPOINT = "checkpoint_final.pth"


def _nnunet():
    try:
        import nnunetv2  # noqa: F401
    except ImportError as e:
        raise ExternalError("nnunetv2 is not installed: pip install 'rog[nnunet]' (under your torch constraint)") from e


def _load_checkpoint(path: Path) -> dict:
    # nnU-Net checkpoints hold plain containers, numbers, strings and a torch.device
    try:
        with torch.serialization.safe_globals([torch.device]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint file
        raise ExternalError(f"{path}: not a readable nnU-Net checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from e


def load_nnunet(model_dir: str | Path, folds: list[int | str] | None = None, tta: bool = True, overlap: float = 0.5,
                postprocessing: str | Path | None = "auto", perturb_background: bool = False,
                checkpoint: str = CHECKPOINT) -> ExternalModel:
    """The nnU-Net model of `model_dir` as `nnUNetv2_predict` deploys it by default.

    Args:
        model_dir: a trained configuration folder, .../DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION.
        folds: the folds to ensemble (ints or "all"); None: every `fold_N` holding `checkpoint`,
            as nnU-Net finds them (not fold_all). Their logits are averaged as nnU-Net averages them.
        tta: mirroring over the axes the first fold's checkpoint allows (nnU-Net's default).
        overlap: of the sliding windows; nnU-Net's tile step is 1 - overlap (default 0.5).
        postprocessing: "auto": the post-processing `nnUNetv2_find_best_configuration` chose
            for these folds, where the folder holds it (`nnunet_post.default_file`); a
            postprocessing.json or .pkl file; None: none.
        perturb_background: where the configuration normalises inside the non-zero mask
            (skull-stripped or masked scans), the perturbation leaves the zero background
            outside nnU-Net's mask unchanged unless this is set (`NnUNetModel._background`).
        checkpoint: the checkpoint file name in each fold folder.

    Returns:
        An `NnUNetModel` whose `network` is one fold's network or an `nn.ModuleList` of them;
        for a cascade's full-resolution folder, an `nnunet_multi.NnUNetCascade` (its previous
        stage found beside it).

    Raises:
        ExternalError naming the folder or file: no such model, a missing fold, a trainer or
        configuration rog cannot run.
    """
    model = load_configuration(model_dir, folds, tta, overlap, postprocessing, perturb_background, checkpoint)
    if not model.configuration.previous_stage_name:
        return model
    from rog.external.nnunet_multi import cascade_of
    return cascade_of(model, Path(model_dir), folds, tta, checkpoint)


def load_configuration(model_dir: str | Path, folds: list[int | str] | None = None, tta: bool = True,
                       overlap: float = 0.5, postprocessing: str | Path | None = "auto",
                       perturb_background: bool = False, checkpoint: str = CHECKPOINT) -> "NnUNetModel":
    """`load_nnunet`'s `NnUNetModel` of the one configuration in `model_dir`, a cascade's
    stage on its own included (its network then takes the image's channels and the previous
    stage's one-hot segmentation)."""
    _nnunet()
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    d = Path(model_dir)
    for name in ("dataset.json", "plans.json"):
        if not (d / name).is_file():
            raise ExternalError(f"{d}: not an nnU-Net model folder (no {name}; expected "
                                ".../DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION)")
    folds = list(folds) if folds else available_folds(d, checkpoint)
    files = [d / f"fold_{f}" / checkpoint for f in folds]
    for ckpt in files:
        if not ckpt.is_file():
            found = sorted(p.parent.name for p in d.glob(f"fold_*/{checkpoint}"))
            raise ExternalError(f"{ckpt}: missing (folds with {checkpoint}: {', '.join(found) or 'none'})")
    states = [_load_checkpoint(ckpt) for ckpt in files]
    state = states[0]  # nnU-Net takes the trainer, configuration and mirroring of the first fold
    dataset_json = read_json_object(d / "dataset.json", ExternalError)
    plans = PlansManager(read_json_object(d / "plans.json", ExternalError))
    configuration = plans.get_configuration(state["init_args"]["configuration"])
    labels = plans.get_label_manager(dataset_json)
    _check_configuration(d, configuration, labels)
    channels = determine_num_input_channels(plans, configuration, dataset_json)
    trainer = trainer_class(state["trainer_name"], files[0])
    flat = len(configuration.patch_size) == 2  # a 2d configuration: each slice of the volume through it
    networks = [_fold_network(trainer, plans, configuration, channels, labels.num_segmentation_heads, ckpt, fold_state,
                              flat) for ckpt, fold_state in zip(files, states)]
    mirror = state.get("inference_allowed_mirroring_axes") if tta else None
    if mirror and flat:  # a 2d network's axes are the slice's, the volume's axes 1 and 2
        mirror = [a + 1 for a in mirror]
    try:
        deployment = Deployment.of(plans, configuration, labels.foreground_labels,
                                   labels.regions_class_order if labels.has_regions else ())
    except ValueError as e:
        raise ExternalError(f"{d / 'plans.json'}: {e}") from e
    if postprocessing == "auto":
        postprocessing = nnunet_post.default_file(d, folds)
    post = nnunet_post.read(postprocessing) if postprocessing else None
    return NnUNetModel(
        name=f"nnU-Net {d.parent.name}/{d.name} {folds_text(folds)}",
        network=networks[0] if len(networks) == 1 else nn.ModuleList(networks),
        patch=[1, *configuration.patch_size] if flat else list(configuration.patch_size),
        num_channels=channels, class_names=class_names(dataset_json, labels),
        weights=files[0] if len(files) == 1 else files,
        window={"mirror_axes": tuple(mirror) if mirror else None, "style": "nnunet", "overlap": overlap},
        plans=plans, configuration=configuration, dataset_json=dataset_json, labels=labels,
        deployment=deployment, folds=folds, post=post, perturb_background=perturb_background)


# the preprocessing `ScanPipeline` reproduces
PREPROCESSOR = "DefaultPreprocessor"


def _check_configuration(d: Path, configuration, labels) -> None:
    """Refuse, naming the folder, what `ScanPipeline` does not reproduce."""
    if labels.has_ignore_label:
        raise ExternalError(f"{d}: nnU-Net models with an ignore label are not supported yet")
    order = labels.regions_class_order if labels.has_regions else None
    if order is not None and sorted(order) != list(range(1, len(labels.foreground_regions) + 1)):
        raise ExternalError(f"{d / 'dataset.json'}: regions_class_order {order}: rog takes a region-based model whose "
                            "order assigns each of the labels 1..R to one region")
    if configuration.preprocessor_name != PREPROCESSOR:
        raise ExternalError(f"{d / 'plans.json'}: preprocessor {configuration.preprocessor_name}: rog reproduces "
                            f"nnU-Net's {PREPROCESSOR} only")


def class_names(dataset_json: dict, labels) -> list[str]:
    """The names of what is scored, dataset.json's: the foreground labels, label 1 first; for a
    region-based model its regions, in the label manager's order (`foreground_regions`)."""
    if not labels.has_regions:
        names = {int(v): k for k, v in dataset_json["labels"].items()}
        return [names.get(k, f"class {k}") for k in range(1, labels.num_segmentation_heads)]
    return [k for k, v in dataset_json["labels"].items() if np.any(np.asarray(v) != 0)]


def _fold_network(trainer, plans, configuration, channels: int, heads: int, ckpt: Path, state: dict,
                  flat: bool) -> nn.Module:
    """One fold's network in eval mode with the weights of its checkpoint `ckpt` (`state`); a
    2d one (`flat`) as `Slicewise`."""
    network = _build_network(trainer, plans, configuration, channels, heads)
    try:
        network.load_state_dict(state["network_weights"])
    except RuntimeError as e:
        raise ExternalError(f"{ckpt}: its weights do not fit the network of plans.json "
                            f"({str(e).splitlines()[0]})") from e
    return Slicewise(network).eval() if flat else network.eval()


class Slicewise(nn.Module):
    """A 2d network `[N, C, H, W]` -> `[N, K, H, W]` as a patch network of windows one slice
    deep, `[N, C, 1, H, W]` -> `[N, K, 1, H, W]`: nnU-Net's 2d prediction of a volume is every
    slice (axis 0 after its transpose) tiled in-plane, which rog's nnU-Net tiling does with a
    window of depth 1 (each slice visited once, `window_starts`)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x[:, :, 0]).unsqueeze(2)


def available_folds(model_dir: Path, checkpoint: str = CHECKPOINT) -> list[int]:
    """The folds `nnUNetv2_predict` ensembles when none are named: every `fold_N` folder with
    `checkpoint`, in nnU-Net's (sorted folder name) order, fold_all left out."""
    folders = sorted(p.name for p in model_dir.glob("fold_*") if p.is_dir() and p.name != "fold_all")
    folds = [int(f.split("_")[-1]) for f in folders if (model_dir / f / checkpoint).is_file()
             and f.split("_")[-1].isdigit()]
    if not folds:
        raise ExternalError(f"{model_dir}: no fold_N/{checkpoint} (name the folds with --folds, 'all' for fold_all)")
    return folds


def folds_text(folds: list) -> str:
    """"fold F" or "folds F1,F2,...", as names and first lines say them."""
    return f"fold {folds[0]}" if len(folds) == 1 else f"folds {','.join(map(str, folds))}"


def _build_network(trainer, plans, configuration, channels: int, heads: int) -> nn.Module:
    """The network as `nnUNetPredictor` builds it: the trainer's `build_network_architecture`."""
    if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
        return trainer.build_network_architecture(plans, configuration, channels, heads, enable_deep_supervision=False)
    return trainer.build_network_architecture(  # nnU-Net < 2.6 signature
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import, channels, heads, enable_deep_supervision=False)


def trainer_class(name: str, checkpoint: Path):
    """nnU-Net's trainer class `name` (recorded in `checkpoint`), searched where
    `recursive_find_trainer_class_by_name` searches (nnU-Net's trainer package, then the
    folders of $nnUNet_extTrainer) but importing only the module whose source defines it:
    nnU-Net's lookup imports every trainer module on its way, so one that needs an optional
    package (Primus needs timm, and timm torchvision) breaks the lookup of every other."""
    import nnunetv2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    roots = [(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer", "nnunetv2.training.nnUNetTrainer")]
    roots += [(Path(p), None) for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p.strip()]
    defines = re.compile(rf"^class\s+{re.escape(name)}\s*[(:]", re.M)
    for folder, package in roots:
        for file in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
            if not defines.search(file.read_text(errors="replace")):
                continue
            parts = file.relative_to(folder).with_suffix("").parts
            module = ".".join(((package,) if package else ()) + parts)
            found = getattr(_import(module, None if package else folder), name, None)
            if isinstance(found, type) and issubclass(found, nnUNetTrainer):
                return found
    raise ExternalError(f"{checkpoint}: trainer {name} is not among nnU-Net's trainers"
                        + (" nor in $nnUNet_extTrainer" if os.environ.get("nnUNet_extTrainer") else
                           " (a custom trainer: put its folder in $nnUNet_extTrainer)"))


def _import(module: str, path: Path | None):
    """Import `module` (from the folder `path` where given); an import that fails is one
    `ExternalError` naming the module and what it lacks."""
    if path is not None:
        sys.path.insert(0, str(path))
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any failure of a trainer module's import is its user's problem
        raise ExternalError(f"nnU-Net trainer module {module} cannot be imported ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from e
    finally:
        if path is not None:
            sys.path.remove(str(path))


def case_files(images: Path, labels: Path | None, dataset_json: dict, channels: int,
               names: list[str] | None = None) -> list[tuple[str, list[Path], Path | None]]:
    """(case, channel files, label file) in nnU-Net's raw layout: IMAGES/CASE_XXXX.ext per
    channel, LABELS/CASE.ext. Every problem is an `ExternalError` naming the file."""
    ending = dataset_json["file_ending"]
    if not images.is_dir():
        raise ExternalError(f"{images}: no such images folder")
    found = sorted({p.name[:-len(ending) - 5] for p in images.glob(f"*_0000{ending}")})
    if not found:
        raise ExternalError(f"{images}: no CASE_0000{ending} image (nnU-Net's raw layout)")
    out = []
    for name in names or found:
        files = [images / f"{name}_{c:04d}{ending}" for c in range(channels)]
        for f in files:
            if not f.is_file():
                raise ExternalError(f"{f}: missing: the model takes {channels} channel(s) "
                                    f"({', '.join(dataset_json['channel_names'].values())})")
        extra = images / f"{name}_{channels:04d}{ending}"
        if extra.is_file():
            raise ExternalError(f"{extra}: the case has more channels than the model's {channels}")
        label = labels / f"{name}{ending}" if labels else None
        if label is not None and not label.is_file():
            raise ExternalError(f"{label}: missing label of case {name}")
        out.append((name, files, label))
    return out


def read_case(plans, files: list[Path], label: Path | None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """One case through nnU-Net's reader: (image `[C, ...]` float32 raw intensities, label
    `[...]` or None, properties with the spacing in the same axis order)."""
    rw = plans.image_reader_writer_class()
    try:
        data, props = rw.read_images([str(f) for f in files])
        seg = rw.read_seg(str(label))[0][0] if label else None
    except Exception as e:  # noqa: BLE001 - the reader's own error, with the file named
        raise ExternalError(f"{files[0] if label is None else label}: unreadable ({type(e).__name__}: {e})") from e
    if seg is not None and seg.shape != data.shape[1:]:
        raise ExternalError(f"{label}: shape {seg.shape} differs from the image's {data.shape[1:]}")
    return np.ascontiguousarray(data, np.float32), seg, props


@dataclass
class NnUNetModel(ExternalModel):
    """An nnU-Net v2 model: its plans, configuration, dataset.json, label manager, and the
    `Deployment` its predictor applies to every case."""

    plans: object = None
    configuration: object = None
    dataset_json: dict | None = None
    labels: object = None
    deployment: Deployment | None = None
    folds: list = field(default_factory=list)
    post: object = None  # `nnunet_post.PostProcessing`, or None
    perturb_background: bool = False  # a masked scan's zero background perturbed too (`_background`)

    @property
    def num_classes(self) -> int:
        """K; for a region-based model a `Regions` of dataset.json's regions: Dice per region,
        and the attacks' losses on regions, as nnU-Net's evaluation and training take them."""
        k = len(self.class_names) + 1
        return Regions(k, self.labels.foreground_regions) if self.labels.has_regions else k

    def whole(self) -> nn.Module:
        """The whole-volume model of the network: its folds tiled as nnU-Net tiles them."""
        return tile(self.network, self.patch, **self.window)

    def around(self, spacing) -> Callable[[nn.Module], nn.Module]:
        """nnU-Net's inference of a case with voxel size `spacing` around `whole()`."""
        return partial(ScanPipeline, spacing=spacing, deployment=self.deployment, post=self.post)

    def settings(self) -> str:
        """One phrase: the folds, mirroring and tiling of this configuration's prediction."""
        mirror = self.window.get("mirror_axes")
        return (folds_text(self.folds) + (" averaged" if len(self.folds) > 1 else "")
                + f", mirroring {'over axes ' + ','.join(map(str, mirror)) if mirror else 'off'}"
                + f", tile step {1 - self.window['overlap']:g}, Gaussian weights, half-precision sums (gradient in fp32)")

    def inference(self) -> dict:
        mirror = self.window.get("mirror_axes")
        text = (f"as nnUNetv2_predict: {self.settings()}; " + self._post_text("logits") + self._background_text()
                + self._regions_text())
        return {"tool": "nnunet", "folds": list(self.folds), "mirror_axes": list(mirror) if mirror else None,
                "background_fixed": self._masked() and not self.perturb_background,
                "tile_step": 1 - self.window["overlap"],
                "postprocessing": self.post.source if self.post else None, "text": text}

    def _post_text(self, before: str) -> str:
        return (f"then {self.post.describe()}: Dice after it, the gradient through the {before} before it"
                if self.post else "no post-processing")

    def _regions_text(self) -> str:
        if not self.labels.has_regions:
            return ""
        named = ", ".join(f"{n} {m}" for n, m in zip(self.class_names, self.num_classes.members))
        return f"; Dice per region ({named}), the attacks' losses on regions"

    def _masked(self) -> bool:
        return any(n.masked for n in self.deployment.norms)

    def _background_text(self) -> str:
        if not self._masked():
            return ""
        return "; the zero background outside nnU-Net's mask " + (
            "perturbed too (--perturb-background)" if self.perturb_background else "left unperturbed")

    def load_cases(self, images, labels, names=None, max_cases=None, device="cpu") -> list[BenchCase]:
        out = []
        for name, files, label in case_files(Path(images), Path(labels), self.dataset_json, self.num_channels,
                                             names)[:max_cases]:
            data, seg, props = read_case(self.plans, files, label)
            x = torch.from_numpy(data)[None]
            lo, hi = ThreatModel.channel_range(x)
            y = torch.from_numpy(seg.astype(np.int64))[None]
            spacing = [float(s) for s in props["spacing"]]
            fixed = self._background(x)
            out.append(BenchCase(name, x.to(device), y.to(device), lo.to(device), hi.to(device),
                                 around=self.around(spacing), hu=self.hu(),
                                 spacing=spacing, fixed=None if fixed is None else fixed.to(device)))
            self.scan_files[name] = files
        return out

    def hu(self):
        # nnU-Net picks its CT normalisation by the channel's name "CT": those channels are HU
        names = [self.dataset_json["channel_names"][k] for k in sorted(self.dataset_json["channel_names"], key=int)]
        hu = [1.0 if str(n).strip().upper() == "CT" else None for n in names]
        return hu if any(v is not None for v in hu) else None

    def _background(self, x: torch.Tensor) -> torch.Tensor | None:
        """For a configuration that normalises inside the non-zero mask (skull-stripped or
        masked scans), the voxels outside nnU-Net's mask of the clean scan x `[1, C, ...]`
        (zero in every channel, holes filled) as `[1, 1, ...]` bool: its zeros are a product of
        preprocessing, and a perturbation there would move nnU-Net's mask and crop box, a step
        no gradient sees. None where the perturbation may act everywhere."""
        if self.perturb_background or not self._masked():
            return None
        from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask
        return ~torch.from_numpy(create_nonzero_mask(x[0].numpy()))[None, None]

    def check_save_volumes(self) -> None:
        reader = self.plans.image_reader_writer_class.__name__
        if reader != "SimpleITKIO":
            raise ExternalError(f"--save-volumes: nnU-Net reads this dataset with {reader}; only its SimpleITKIO "
                                "reader's voxel order is known to rog")

    def save_volume(self, case, path, data, label) -> None:
        # nnU-Net's SimpleITK reader gives the voxels in reversed index order: put them back in
        # the file's order and write them on the file's own grid
        from rog.data.io import read_image
        if case not in self.scan_geometry:
            self.scan_geometry[case] = read_image(self.scan_files[case][:1])[1]
        super().save_volume(case, path, data.transpose(2, 1, 0) if label else data.transpose(0, 3, 2, 1), label)
