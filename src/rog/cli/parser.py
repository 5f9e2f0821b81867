"""The `rog` command's arguments: one sub-parser per command, each option with its help and
default, range-checked by argparse types (a nonsense value ends the command with one line
naming the argument). Renamed options keep their old spelling as a hidden alias for a release
(`rog.cli.types.alias`)."""
from __future__ import annotations

import argparse

from rog.cli import commands as c
from rog.cli.sweep_options import sweep_parsers
from rog.cli.training import adversarial_options
from rog.cli.types import COUNT, EPS, POSITIVE_INT, Help, alias, device_option, number, triple


def _common(s) -> None:
    """Options every command takes, before or after its name."""
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error")
    s.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars, warnings and results only")
    s.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="details: each attack's or corruption's result as it comes, predict's seconds per stage")


def _workdir(s) -> None:
    s.add_argument("-w", "--workdir", default=None, help="work directory (default: ./rog_work/<dataset name>)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("rog")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rog", description="Robust general 3D medical image segmentation",
                                formatter_class=Help)
    p.add_argument("--version", action="version", version=f"rog {_version()}")
    p.add_argument("--debug", action="store_true", default=False, help="show the traceback of an error")
    p.add_argument("-q", "--quiet", action="store_true", default=False, help="no progress bars, warnings and results only")
    p.add_argument("-v", "--verbose", action="store_true", default=False, help="details (debug messages)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn, helptext: str):
        s = sub.add_parser(name, help=helptext, description=helptext, formatter_class=Help)
        _common(s)
        s.set_defaults(fn=fn)
        return s

    s = command("synth", c.cmd_synth, "write a synthetic MSD-layout task")
    s.add_argument("out", nargs="?", default="rog_data/SynthCT", help="output folder")
    s.add_argument("--kind", default="ct", choices=["ct", "mri"], help="CT-like (one channel) or MRI-like (two)")
    s.add_argument("--num-cases", dest="cases", type=POSITIVE_INT, default=12, help="labelled training cases")
    alias(s, "--cases", "cases", type=POSITIVE_INT)
    s.add_argument("--num-test-cases", dest="test_cases", type=COUNT, default=2, help="labelled test cases")
    alias(s, "--test-cases", "test_cases", type=COUNT)
    s.add_argument("--seed", type=int, default=0, help="seed of the phantoms")
    s.add_argument("--layout", default="msd", choices=["msd", "nnunet"], help="folder layout")
    s.add_argument("--size", type=POSITIVE_INT, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="in-plane voxels per case, drawn in [MIN, MAX] (default: the kind's)")

    s = command("check", c.cmd_check, "list every problem of a dataset folder")
    s.add_argument("dataset", help="dataset folder (MSD or nnU-Net v2 dataset.json)")

    for name, fn, helptext in (("plan", c.cmd_plan, "fingerprint the dataset and write plan.json"),
                               ("preprocess", c.cmd_preprocess, "preprocess every case into the work directory")):
        s = command(name, fn, helptext)
        s.add_argument("dataset", help="dataset folder (MSD or nnU-Net v2 dataset.json)")
        _workdir(s)
        s.add_argument("--workers", type=POSITIVE_INT, default=None, help="processes (default: up to 2 CPUs)")
    s = sub.choices["plan"]
    s.add_argument("--force", action="store_true", help="recompute fingerprint and plan")
    s.add_argument("--model", default=None, help="registered name or package.module:factory (default: rog; "
                   "an existing plan's is kept unless given)")
    s.add_argument("--width", type=POSITIVE_INT, default=None, help="the model's level-0 width (default: the "
                   "paper's 64; an existing plan's is kept unless given)")
    s.add_argument("--spacing", type=number(float, 0, lo_open=True), nargs="+", default=None, metavar="MM",
                   help="target spacing in mm, one value or three (default: the median spacing)")
    sub.choices["preprocess"].add_argument("--no-test", action="store_true", help="skip the test cases")

    s = command("summary", c.cmd_summary, "parameters and GFLOPs of each registered model")
    s.add_argument("--plan", help="plan.json (else the explicit options below)")
    s.add_argument("--channels", type=POSITIVE_INT, default=1, help="input channels")
    s.add_argument("--classes", type=number(int, 2), default=2, help="classes, background included")
    s.add_argument("--strides", type=triple, nargs=3, default=[[1] * 3, [2] * 3, [2] * 3], metavar="S",
                   help="s0 s1 s2, each '2' or per axis '2,2,1'")
    s.add_argument("--input", type=triple, default=None, help="input size, '96' or '96,96,48' (default: the plan's "
                   "patch, else 96)")
    s.add_argument("--width", type=POSITIVE_INT, default=64, help="level-0 width")
    s.add_argument("--models", nargs="*", default=None, help="model names (default: every registered model)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    s = command("train", c.cmd_train, "train a model (clean, Free AT, PGD-AT, against artefacts or on noise); torchrun for DDP")
    s.add_argument("dataset", help="dataset folder (MSD or nnU-Net v2 dataset.json)")
    _workdir(s)
    s.add_argument("--name", default="rog", help="run name: WORKDIR/runs/NAME")
    s.add_argument("--width", type=POSITIVE_INT, default=None, help="ROG level-0 width (default: the plan's, paper 64)")
    unset = argparse.SUPPRESS  # TrainConfig's default for a new run, the run's own value on --resume
    s.add_argument("--model", default=unset, help="registered name or package.module:factory (default: the plan's)")
    s.add_argument("--epochs", type=POSITIVE_INT, default=unset, help="(default 1000)")
    s.add_argument("--iterations-per-epoch", dest="iterations", type=POSITIVE_INT, default=unset,
                   help="(default: one patch per training case)")
    alias(s, "--iterations", "iterations", type=POSITIVE_INT)
    s.add_argument("--batch-size", type=POSITIVE_INT, default=unset, help="(default: the plan's)")
    s.add_argument("--lr", type=number(float, 0, lo_open=True), default=unset, help="learning rate (default 1e-3)")
    s.add_argument("--patience", type=COUNT, default=unset, help="epochs without improvement before the learning "
                   "rate is reduced (default 50)")
    s.add_argument("--fold", type=COUNT, default=unset, help="cross-validation fold (default 0)")
    s.add_argument("--split", metavar="FILE", default=unset, help="JSON split: train and val (and test) case lists, or "
                   "nnU-Net's splits_final.json (--fold picks one); recorded in the run (default: seeded folds, or "
                   "a splits.json already in the run folder)")
    s.add_argument("--seed", type=COUNT, default=unset, help="(default 0)")
    s.add_argument("--augment", choices=["default", "corruptions"], default=unset,
                   help="'corruptions': also scanner artefacts on half the training patches (default: default)")
    s.add_argument("--init-from", default=unset, help="run directory to fine-tune from (default: none)")
    adversarial_options(s, unset)
    s.add_argument("--precision", default=unset, choices=["fp32", "bf16", "fp16"], help="(default fp32)")
    device_option(s, unset)
    s.add_argument("--workers", type=COUNT, default=unset, help="data loader worker processes (default 0)")
    s.add_argument("--save-every", type=COUNT, default=unset,
                   help="also checkpoint every N iterations (default 0: at epoch ends only)")
    s.add_argument("--resume", action="store_true",
                   help="continue the run with its own config.json (options given here override it)")
    s.add_argument("--overwrite", action="store_true", help="delete an existing run of this name first")
    s.add_argument("--tensorboard", action="store_true", default=unset, help="also log to TensorBoard")
    s.add_argument("--no-postprocessing", action="store_true", help="skip the post-processing decision")

    s = command("predict", c.cmd_predict, "predict label maps in each input's original geometry")
    s.add_argument("runs", nargs="*", metavar="RUN", help="run directory; several are ensembled (their "
                   "probabilities averaged, as nnU-Net ensembles)")
    s.add_argument("-i", "--input", required=True, help="dataset folder (its test list) or folder of images: NIfTI, "
                   "NRRD, MetaImage, GIPL (nnU-Net's CASE_0000 files or one file per case) or one DICOM series "
                   "folder per case")
    s.add_argument("-o", "--output", required=True, help="output folder")
    s.add_argument("--model", help="instead of runs: registered name or package.module:factory")
    s.add_argument("--checkpoint", help="weights for --model (a state dict), or a TorchScript model file (then no --model)")
    s.add_argument("--plan", help="plan.json for --model")
    s.add_argument("--postprocess", default="auto", choices=["auto", "on", "off"],
                   help="auto: the run's decision (an ensemble's where its runs agree)")
    s.add_argument("--overlap", type=number(float, 0, 0.95), default=0.5, help="sliding-window overlap")
    s.add_argument("--disable-tta", "--disable_tta", dest="tta", action="store_false",
                   help="no mirroring test-time augmentation (default: mirrored along the 3 axes, 8 passes, as nnU-Net)")
    alias(s, "--tta", "tta", action="store_true")  # the old switch: mirroring is on by default now
    s.add_argument("--save-probabilities", "--save_probabilities", action="store_true",
                   help="also write NAME.npz: class probabilities [K, X, Y, Z] in the image's voxel order, and its affine")
    s.add_argument("--continue", dest="resume", action="store_true",
                   help="skip cases already predicted (only with the same models and settings)")
    s.add_argument("--smooth", type=number(float, 0, None, lo_open=True), metavar="SIGMA",
                   help="the smoothed model's labels (what rog certify certifies): the majority vote of the whole "
                        "inference on --samples copies with Gaussian noise of sd SIGMA times each channel's range")
    s.add_argument("--samples", type=number(int, 1), default=100, help="noisy copies per case for --smooth")
    s.add_argument("--dicom-output", default="seg", choices=["seg", "series"],
                   help="a DICOM series' prediction: seg, one DICOM-SEG file NAME.dcm referencing the series (its "
                        "patient, study and frame of reference), or series, a label series NAME/ of its own")
    device_option(s)

    s = command("evaluate", c.cmd_evaluate, "Dice, HD95 and surface Dice of predictions against references "
                "(reference folder first, as nnU-Net)")
    s.add_argument("gt", metavar="REFERENCE", help="folder of reference label maps")
    s.add_argument("pred", metavar="PREDICTION", help="folder of predicted label maps, same file names")
    s.add_argument("--classes", type=number(int, 2), default=None,
                   help="number of classes incl. background (default: the largest label present + 1)")
    s.add_argument("--tolerance", type=number(float, 0, lo_open=True), default=1.0, help="surface Dice tolerance in mm")
    s.add_argument("-o", "--out", default=None, help="output path stem (default: PREDICTION/summary)")

    sweep_parsers(command)

    s = command("report", c.cmd_report, "HTML report with the paper's figures and tables")
    s.add_argument("inputs", nargs="+", help="results folders (attack or corruption) or run folders")
    s.add_argument("-o", "--out", default="rog_report", help="output folder")
    s.add_argument("--table-eps", type=EPS, default=8.0, help="eps of the per-attack table and the panels")
    s.add_argument("--no-panels", action="store_true", help="skip the qualitative figure")
    s.add_argument("--baseline", help="name of the model corruption errors are relative to (ImageNet-C's mCE)")
    tau = s.add_mutually_exclusive_group()
    tau.add_argument("--tau-from", metavar="LABEL",
                     help="the model whose half mean clean Dice is every robust accuracy's tau (default: the first)")
    tau.add_argument("--tau", type=number(float, 0, 1, lo_open=True), help="the success threshold of every robust accuracy")

    s = command("demo", c.cmd_demo, "the paper's experiment end to end: three models, three seeds, attacks, report")
    s.add_argument("--quick", action="store_true", help="smaller budgets (one seed)")
    s.add_argument("--task", default="nuclei", choices=["nuclei", "synthetic"],
                   help="nuclei: real brain templates; synthetic: the embedded CT-like phantoms")
    s.add_argument("-w", "--workdir", default=None,
                   help="work directory (default: rog_work/demo or rog_work/demo-synthetic)")

    s = command("nuclei", c.cmd_nuclei, "write the deep grey nuclei task from installed brain templates and atlases")
    s.add_argument("out", nargs="?", default="rog_data/Nuclei", help="output folder")

    s = command("run-paper", c.cmd_run_paper, "the paper's experiment with its settings on a real MSD task")
    s.add_argument("dataset", help="dataset folder (MSD or nnU-Net v2 dataset.json)")
    _workdir(s)
    device_option(s)
    return p
