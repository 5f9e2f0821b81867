"""The options of the benchmark commands (`rog attack`, `rog corrupt`, `rog artefact`): the
model, data and case options they share, and each one's own."""
from __future__ import annotations

from rog.cli import sweeps as s_
from rog.cli.types import COUNT, POSITIVE_INT, alias, device_option, fold, number
from rog.results import EPS_UNITS


def _model_source_arguments(s) -> None:
    """The model, data and case options that `attack`, `corrupt` and `artefact` share."""
    s.add_argument("run", nargs="?", help="run directory (or --model with --plan and --data)")
    s.add_argument("--cases", nargs="*", metavar="NAME", help="case names (default: the labelled test cases, else "
                   "the run's held-out split, else its validation split)")
    s.add_argument("--max-cases", type=POSITIVE_INT, default=None, help="evaluate at most this many cases")
    s.add_argument("--seed", type=COUNT, default=0, help="seed of the attacks' or corruptions' random draws")
    s.add_argument("--model", help="instead of a run: registered name or package.module:factory")
    s.add_argument("--checkpoint", help="weights for --model (a state dict), or a TorchScript model file (then no --model)")
    s.add_argument("--plan", help="plan.json for --model")
    s.add_argument("--data", help="preprocessed folder (default: the run's work directory)")
    s.add_argument("--name", dest="label", help="the model's name in results and reports (default: the run's name)")
    alias(s, "--label", "label")
    s.add_argument("-o", "--out", default=None, help="results folder (default: WORKDIR/attacks/RUN-SCOPE for a run, "
                   "else ./rog_SCOPE)")
    device_option(s)
    s.add_argument("--save-volumes", action="store_true", help="also write each case's attacked (worst attack per eps), "
                   "corrupted or worst-artefact input, its difference from the clean one and the predictions as images in the "
                   "scan's own format and geometry, under OUT/volumes/CASE/ (an attacked patch is put back into its case)")
    g = s.add_argument_group("an nnU-Net v2 model (needs the nnunetv2 extra)")
    g.add_argument("--nnunet", metavar="MODEL_DIR", nargs="+",
                   help="trained configuration folder, .../DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres; "
                   "several of one dataset: their ensemble, probabilities averaged as nnUNetv2_ensemble")
    g.add_argument("--folds", "-f", type=fold, nargs="+", default=None,
                   help="folds to ensemble, 0-4 or 'all' (default: every fold_N with checkpoint_final.pth, as "
                   "nnUNetv2_predict)")
    alias(g, "--fold", "folds", type=fold, nargs="+")
    g.add_argument("--images", help="raw images, nnU-Net layout CASE_XXXX.ext (with --nnunet, --bundle, or --model/"
                   "--checkpoint without --plan: your model on the scans as stored)")
    g.add_argument("--labels", help="raw label maps CASE.ext (with --images)")
    g.add_argument("--disable-tta", "--disable_tta", dest="tta", action="store_false",
                   help="no mirroring (default: mirrored along the axes the model allows, logits averaged, as nnU-Net)")
    alias(g, "--tta", "tta", action="store_true")  # the old switch: mirroring is on by default now
    g.add_argument("--postprocessing", default="auto", metavar="auto|none|FILE",
                   help="nnU-Net's post-processing, applied before Dice: 'auto' (the one nnUNetv2_find_best_configuration "
                   "wrote for these folds, MODEL_DIR/crossval_results_folds_*/postprocessing.json or .pkl, for an ensemble "
                   "DatasetXXX/ensembles/ensemble___*/postprocessing.*, where it exists), 'none', or a postprocessing.json/.pkl file")
    g.add_argument("--perturb-background", action="store_true",
                   help="skull-stripped or masked scans (normalised inside the non-zero mask): perturb the zero "
                   "background outside nnU-Net's mask too (default: left as it is, a product of preprocessing; "
                   "a perturbation there moves the mask and crop box, a step the gradient does not see)")
    g = s.add_argument_group("your model on the scans as stored (--model package.module:factory called with no "
                             "argument, or a TorchScript --checkpoint; --images, --labels)")
    g.add_argument("--window", type=POSITIVE_INT, nargs=3, metavar=("X", "Y", "Z"), default=None,
                   help="sliding-window patch in voxels (default: each case through the model whole)")
    g.add_argument("--overlap", type=number(float, 0, 0.99), default=0.5,
                   help="overlap of the sliding windows (with --nnunet too: its tile step is 1 - overlap)")
    g = s.add_argument_group("a MONAI bundle")
    g.add_argument("--bundle", metavar="DIR", help="bundle folder (configs/inference.json, models/model.pt); "
                   "images and labels with --images/--labels (NIfTI, same file names)")


def sweep_parsers(command) -> None:
    """Add `attack`, `corrupt`, `artefact` and `certify` through `command(name, fn, help)`, which makes a
    sub-parser with the options every command takes."""
    s = command("attack", s_.cmd_attack, "robustness benchmark: AutoAttack for 3D segmentation")
    s.add_argument("--eps", type=number(float, 0, lo_open=True), nargs="+", default=[4, 8, 12, 16],
                   help="radii in --eps-unit: on the /255 scale of each channel's range, in (0, 255], by default")
    s.add_argument("--eps-unit", default="range", choices=list(EPS_UNITS),
                   help="range: /255 of each channel's per-case range (the paper's); hu: Hounsfield units of a CT "
                   "scan; sd: standard deviations of each channel over the case's labelled voxels (tissue contrast)")
    s.add_argument("--eps-channels", type=number(float, 0), nargs="+", metavar="W",
                   help="each input channel's multiple of --eps, one per channel (0 leaves a channel untouched: "
                   "e.g. 1 0 1 1 attacks every modality but the second)")
    s.add_argument("--attacks", nargs="+", default=["standard"], help="names, 'standard' (AutoAttack's), 'sea' (SEA's losses, "
                   "APGD with progressive radius reduction) or 'plus' (every attack)")
    s.add_argument("--iterations", dest="iters", type=POSITIVE_INT, nargs="+", default=[5],
                   help="iterations of the gradient attacks (one run per value)")
    alias(s, "--iters", "iters", type=POSITIVE_INT, nargs="+")
    s.add_argument("--queries", type=POSITIVE_INT, nargs="+", default=[500],
                   help="queries of Square, the black-box attack (one run per value)")
    s.add_argument("--scope", default=None, choices=["patch", "volume"],
                   help="patch (default) or volume: whole cases through the sliding window (always with --images)")
    s.add_argument("--norm", default="linf", choices=["linf", "l2"], help="threat model")
    _model_source_arguments(s)

    s = command("corrupt", s_.cmd_corrupt, "robustness to scanner artefacts: corruptions x severities (TorchIO)")
    s.add_argument("--corruptions", nargs="+", default=["all"],
                   help="noise, blur, bias, motion, ghosting, spike, gamma, anisotropy, or 'all'")
    s.add_argument("--severities", type=number(int, 1, 5), nargs="+", default=[1, 2, 3, 4, 5], help="1 to 5")
    _model_source_arguments(s)

    s = command("modality", s_.cmd_modality, "missing or degraded modality: each input channel in turn replaced "
                "(zero, its mean, or an artefact on it alone), Dice per case and class")
    s.add_argument("--replace", nargs="+", default=["zero", "mean"], metavar="WHAT",
                   help="zero (0 in the model's input units: a z-scored channel's mean), mean (the case's channel "
                   "mean), or CORRUPTION:SEVERITY of rog corrupt on that channel alone (e.g. noise:3 motion:5)")
    s.add_argument("--channels", type=number(int, 0), nargs="+", help="the channels to replace (default: every one)")
    _model_source_arguments(s)

    s = command("artefact", s_.cmd_artefact, "the worst scanner artefact of each size: a gradient search on the "
                "artefact's parameters beside random draws of the same severity")
    s.add_argument("--artefacts", nargs="+", default=["all"],
                   help="bias, gamma, blur, noise, motion, chain (all of them at once), or 'all'")
    s.add_argument("--severities", type=number(int, 1, 5), nargs="+", default=[1, 3, 5],
                   help="1 to 5, the scale of rog corrupt")
    s.add_argument("--draws", type=POSITIVE_INT, default=10, help="random draws per case, artefact and severity")
    s.add_argument("--iterations", dest="iters", type=COUNT, default=10,
                   help="APGD iterations on the artefact's parameters per restart (0: draws only)")
    s.add_argument("--restarts", type=POSITIVE_INT, default=2,
                   help="APGD runs: the first from the worst draw, the others from uniform draws")
    s.add_argument("--loss", default="dice", choices=["dice", "ce"], help="the search's loss: soft Dice or CE")
    s.add_argument("--search", default="auto", choices=["auto", "apgd", "random"],
                   help="the search on the parameters: APGD, or a derivative-free random search at APGD's cost "
                        "(auto: random for motion, and wherever no gradient reaches the parameters, as through a "
                        "non-differentiable pipeline; APGD for the others)")
    _model_source_arguments(s)

    s = command("certify", s_.cmd_certify, "certified Dice: randomized smoothing of the model's whole inference "
                "(SegCertify), a lower bound under every L2 perturbation of each radius")
    s.add_argument("--sigmas", type=number(float, 0, lo_open=True), nargs="+", default=[0.12],
                   help="noise sd on the range-normalised scale (each channel's range is 1)")
    s.add_argument("--samples", type=POSITIVE_INT, default=100, help="noisy copies that estimate each voxel's class "
                   "probability (whole predictions per case)")
    s.add_argument("--samples0", type=POSITIVE_INT, default=10, help="noisy copies that choose each voxel's class")
    s.add_argument("--alpha", type=number(float, 0, 1, lo_open=True), default=0.001,
                   help="probability that a case's certificate at a radius is wrong")
    s.add_argument("--radii", type=number(float, 0), nargs="+", default=[0.0, 0.03, 0.06, 0.12],
                   help="L2 radii on the range-normalised scale (0: the smoothed prediction)")
    s.add_argument("--correction", default="holm", choices=["holm", "bonferroni"],
                   help="multiple testing over the voxels")
    s.add_argument("--batch", type=POSITIVE_INT, default=1, help="noisy copies per forward pass")
    _model_source_arguments(s)
