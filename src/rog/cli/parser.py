"""The `rog` command's arguments: one sub-parser per command, range-checked by argparse types
(a nonsense value ends the command with one line naming the argument)."""
from __future__ import annotations

import argparse
import math

from rog.cli import commands as c


def _number(kind=float, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse type: a finite `kind` within [lo, hi] ((lo, hi] with `lo_open`); anything
    else ends the command with one line naming the argument."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{text} must be <= {hi:g}")
        return v
    return parse


POSITIVE_INT, COUNT = _number(int, 1), _number(int, 0)
# eps on the /255 scale: beyond 255 the ball holds the whole box
EPS = _number(float, 0, 255, lo_open=True)


def _fold(text: str):
    """An nnU-Net fold: 'all' or an integer >= 0."""
    return "all" if text == "all" else _number(int, 0)(text)


def _model_source_arguments(s) -> None:
    """The model, data and case options that `attack` and `corrupt` share."""
    s.add_argument("--cases", nargs="*", help="case names (default: the labelled test cases, else the run's "
                   "held-out split, else its validation split)")
    s.add_argument("--max-cases", type=POSITIVE_INT, default=None)
    s.add_argument("--seed", type=COUNT, default=0)
    s.add_argument("--model", help="registered name or package.module:factory")
    s.add_argument("--checkpoint")
    s.add_argument("--plan")
    s.add_argument("--data", help="preprocessed folder (default: the run's work directory)")
    s.add_argument("--label", help="model name in results and reports (default: the run's name)")
    s.add_argument("-o", "--out", default=None)
    s.add_argument("--device", default="auto")
    g = s.add_argument_group("an nnU-Net v2 model (needs the nnunetv2 extra)")
    g.add_argument("--nnunet", metavar="MODEL_DIR",
                   help="trained configuration folder, .../DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres")
    g.add_argument("--fold", type=_fold, default=0, help="fold to load: 0-4 or 'all' (default 0)")
    g.add_argument("--images", help="raw images, nnU-Net layout CASE_XXXX.ext (with --nnunet)")
    g.add_argument("--labels", help="raw labels CASE.ext (with --nnunet)")
    g.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (logits averaged, as nnU-Net)")
    g = s.add_argument_group("a MONAI bundle")
    g.add_argument("--bundle", metavar="DIR", help="bundle folder (configs/inference.json, models/model.pt); "
                   "images and labels with --images/--labels (NIfTI, same file names)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rog", description="Robust general 3D medical image segmentation")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic MSD-layout task")
    s.add_argument("out", nargs="?", default="rog_data/SynthCT")
    s.add_argument("--kind", default="ct", choices=["ct", "mri"])
    s.add_argument("--cases", type=POSITIVE_INT, default=12)
    s.add_argument("--test-cases", type=COUNT, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--layout", default="msd", choices=["msd", "nnunet"])
    s.add_argument("--size", type=POSITIVE_INT, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="in-plane voxels per case, drawn in [MIN, MAX] (default: the kind's)")
    s.set_defaults(fn=c.cmd_synth)

    s = sub.add_parser("check", help="list every problem of a dataset folder")
    s.add_argument("dataset")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=c.cmd_check)

    for name, fn, helptext in (("plan", c.cmd_plan, "fingerprint the dataset and write plan.json"),
                               ("preprocess", c.cmd_preprocess, "preprocess every case into the work directory")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("dataset")
        s.add_argument("-w", "--workdir", default=None, help="work directory (default ./rog_work/<dataset>)")
        s.add_argument("--workers", type=POSITIVE_INT, default=None)
        s.set_defaults(fn=fn)
    plan_p = sub.choices["plan"]
    plan_p.add_argument("--force", action="store_true", help="recompute fingerprint and plan")
    plan_p.add_argument("--model", default="rog")
    plan_p.add_argument("--width", type=POSITIVE_INT, default=64)
    plan_p.add_argument("--spacing", type=_number(float, 0, lo_open=True), nargs="+", default=None, metavar="MM",
                        help="target spacing in mm, one value or three (default: the median spacing)")
    sub.choices["preprocess"].add_argument("--no-test", action="store_true", help="skip the test cases")

    s = sub.add_parser("summary", help="parameters and GFLOPs of each registered model")
    s.add_argument("--plan", help="plan.json (else the explicit options below)")
    s.add_argument("--channels", type=POSITIVE_INT, default=1)
    s.add_argument("--classes", type=_number(int, 2), default=2)
    s.add_argument("--strides", nargs=3, default=["1", "2", "2"], metavar="S",
                   help="s0 s1 s2, each '2' or per axis '2,2,1'")
    s.add_argument("--input", default=None, help="input size, '96' or '96,96,48'")
    s.add_argument("--width", type=POSITIVE_INT, default=64)
    s.add_argument("--models", nargs="*", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=c.cmd_summary)

    s = sub.add_parser("train", help="train a model (clean, Free AT or PGD-AT); torchrun for DDP")
    s.add_argument("dataset")
    s.add_argument("-w", "--workdir", default=None)
    s.add_argument("--name", default="rog")
    s.add_argument("--width", type=POSITIVE_INT, default=None, help="ROG level-0 width (default: plan, paper 64)")
    unset = argparse.SUPPRESS  # TrainConfig's default for a new run, the run's own value on --resume
    s.add_argument("--model", default=unset, help="registered name or package.module:factory (default: plan)")
    s.add_argument("--epochs", type=POSITIVE_INT, default=unset, help="(default 1000)")
    s.add_argument("--iterations", type=POSITIVE_INT, default=unset, help="per epoch (default: one patch per case)")
    s.add_argument("--batch-size", type=POSITIVE_INT, default=unset, help="(default: the plan's)")
    s.add_argument("--lr", type=_number(float, 0, lo_open=True), default=unset, help="(default 1e-3)")
    s.add_argument("--patience", type=COUNT, default=unset, help="(default 50)")
    s.add_argument("--fold", type=COUNT, default=unset, help="(default 0)")
    s.add_argument("--seed", type=COUNT, default=unset, help="(default 0)")
    s.add_argument("--adv", choices=["free", "pgd"], default=unset)
    s.add_argument("--augment", choices=["default", "corruptions"], default=unset,
                   help="'corruptions': also scanner artefacts on half the training patches (default: default)")
    s.add_argument("--eps", type=EPS, default=unset, help="adversarial eps on the /255 range scale (default 8)")
    s.add_argument("--replays", type=POSITIVE_INT, default=unset, help="Free AT minibatch replays m (default 5)")
    s.add_argument("--no-divide-epochs", dest="divide_epochs", action="store_false", default=unset,
                   help="Free AT: do not divide epochs by m")
    s.add_argument("--pgd-steps", type=POSITIVE_INT, default=unset, help="(default 5)")
    s.add_argument("--init-from", default=unset, help="run directory to fine-tune from")
    s.add_argument("--precision", default=unset, choices=["fp32", "bf16", "fp16"], help="(default fp32)")
    s.add_argument("--device", default=unset, help="(default auto)")
    s.add_argument("--workers", type=COUNT, default=unset, help="data loader worker processes (default 0)")
    s.add_argument("--save-every", type=COUNT, default=unset, help="also checkpoint every N iterations")
    s.add_argument("--resume", action="store_true",
                   help="continue the run with its own config.json (options given here override it)")
    s.add_argument("--overwrite", action="store_true", help="delete an existing run of this name first")
    s.add_argument("--tensorboard", action="store_true", default=unset)
    s.add_argument("--no-postprocessing", action="store_true", help="skip the post-processing decision")
    s.set_defaults(fn=c.cmd_train)

    s = sub.add_parser("predict", help="predict label maps in each input's original geometry")
    s.add_argument("run", nargs="?", help="run directory (plan.json, config.json, checkpoints)")
    s.add_argument("-i", "--input", required=True, help="dataset folder (its test list) or folder of NIfTI images")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--model", help="instead of a run: registered name or package.module:factory")
    s.add_argument("--checkpoint", help="weights for --model")
    s.add_argument("--plan", help="plan.json for --model")
    s.add_argument("--postprocess", default="auto", choices=["auto", "on", "off"])
    s.add_argument("--overlap", type=_number(float, 0, 0.95), default=0.5)
    s.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8 passes)")
    s.add_argument("-v", "--verbose", action="store_true", help="print the seconds of each stage")
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=c.cmd_predict)

    s = sub.add_parser("evaluate", help="Dice, HD95 and surface Dice of predictions against references")
    s.add_argument("pred")
    s.add_argument("gt")
    s.add_argument("--classes", type=_number(int, 2), default=None, help="number of classes incl. background")
    s.add_argument("--tolerance", type=_number(float, 0, lo_open=True), default=1.0,
                   help="surface Dice tolerance in mm")
    s.add_argument("-o", "--out", default=None, help="output path stem (default PRED/summary)")
    s.set_defaults(fn=c.cmd_evaluate)

    s = sub.add_parser("attack", help="robustness benchmark: AutoAttack for 3D segmentation")
    s.add_argument("run", nargs="?", help="run directory (or --model/--plan/--data)")
    s.add_argument("--eps", type=EPS, nargs="+", default=[4, 8, 12, 16], help="on the /255 scale, in (0, 255]")
    s.add_argument("--attacks", nargs="+", default=["standard"], help="names, 'standard' or 'plus'")
    s.add_argument("--iters", type=POSITIVE_INT, nargs="+", default=[5])
    s.add_argument("--queries", type=POSITIVE_INT, nargs="+", default=[500])
    s.add_argument("--scope", default=None, choices=["patch", "volume"],
                   help="patch (default) or volume: whole cases through the sliding window (always with --nnunet)")
    s.add_argument("--norm", default="linf", choices=["linf", "l2"])
    _model_source_arguments(s)
    s.set_defaults(fn=c.cmd_attack)

    s = sub.add_parser("corrupt", help="robustness to scanner artefacts: corruptions x severities (TorchIO)")
    s.add_argument("run", nargs="?", help="run directory (or --model/--plan/--data)")
    s.add_argument("--corruptions", nargs="+", default=["all"],
                   help="noise, blur, bias, motion, ghosting, spike, gamma, anisotropy, or 'all'")
    s.add_argument("--severities", type=_number(int, 1, 5), nargs="+", default=[1, 2, 3, 4, 5], help="1 to 5")
    _model_source_arguments(s)
    s.set_defaults(fn=c.cmd_corrupt)

    s = sub.add_parser("report", help="HTML report with the paper's figures and tables")
    s.add_argument("inputs", nargs="+", help="results folders (attack or corruption) or run folders")
    s.add_argument("-o", "--out", default="rog_report")
    s.add_argument("--table-eps", type=EPS, default=8.0)
    s.add_argument("--no-panels", action="store_true", help="skip the qualitative figure")
    s.add_argument("--baseline", help="label of the model corruption errors are relative to (ImageNet-C's mCE)")
    s.set_defaults(fn=c.cmd_report)

    s = sub.add_parser("demo", help="the paper's experiment end to end: three models, three seeds, attacks, report")
    s.add_argument("--quick", action="store_true", help="smaller budgets (two seeds)")
    s.add_argument("--task", default="nuclei", choices=["nuclei", "synthetic"],
                   help="nuclei: real brain templates (default); synthetic: the embedded CT-like phantoms")
    s.add_argument("-w", "--workdir", default=None, help="work directory (default rog_work/demo or rog_work/demo-synthetic)")
    s.set_defaults(fn=c.cmd_demo)

    s = sub.add_parser("nuclei", help="write the deep grey nuclei task from installed brain templates and atlases")
    s.add_argument("out", nargs="?", default="rog_data/Nuclei")
    s.set_defaults(fn=c.cmd_nuclei)

    s = sub.add_parser("run-paper", help="the paper's experiment with its settings on a real MSD task")
    s.add_argument("dataset")
    s.add_argument("-w", "--workdir", default=None)
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=c.cmd_run_paper)
    return p


