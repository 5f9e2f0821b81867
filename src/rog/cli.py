"""The `rog` command: parses arguments and calls library functions, nothing else."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from rog.errors import RogError


class UsageError(RogError):
    """An argument makes no sense; the message names it."""


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


def _workers(n: int | None) -> int:
    return n if n else min(2, os.cpu_count() or 1)


def cmd_synth(a) -> int:
    from rog.data.synthetic import describe, make_task, min_size
    if a.size and (a.size[0] < min_size(a.kind) or a.size[1] < a.size[0]):
        raise UsageError(f"--size {a.size[0]} {a.size[1]}: need {min_size(a.kind)} <= MIN <= MAX for kind "
                         f"{a.kind!r} (smaller volumes have axes under the 8 voxels rog needs)")
    out = make_task(a.out, kind=a.kind, cases=a.cases, test_cases=a.test_cases, seed=a.seed,
                    layout=a.layout, size=tuple(a.size) if a.size else None)
    print(describe(out) if a.layout == "msd" else f"wrote {out}")
    return 0


def cmd_check(a) -> int:
    from rog.data.check import check_dataset
    problems = check_dataset(a.dataset, progress=not a.quiet)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) found in {a.dataset}" if problems else f"{a.dataset}: no problems found")
    return 1 if problems else 0


def cmd_plan(a) -> int:
    from rog.data.dataset import load_dataset
    from rog.rundir import Workdir
    from rog.workdir import ensure_fingerprint, ensure_plan
    ds = load_dataset(a.dataset)
    wd = Workdir.for_dataset(ds, a.workdir)
    ensure_fingerprint(ds, wd, _workers(a.workers), force=a.force)
    plan = ensure_plan(ds, wd, _workers(a.workers), force=a.force, model=a.model, width=a.width,
                       spacing=a.spacing)
    print(plan.table())
    print(f"plan written to {wd.plan} (edit it by hand to change any setting)")
    return 0


def cmd_preprocess(a) -> int:
    from rog.workdir import run_preprocessing
    wd, _, done = run_preprocessing(a.dataset, a.workdir, _workers(a.workers), include_test=not a.no_test)
    print(f"preprocessed {len(done)} case(s) into {wd.preprocessed} (finished cases are skipped)")
    return 0


def _parse_triple(text: str) -> list[int]:
    parts = [int(v) for v in text.split(",")]
    return parts * 3 if len(parts) == 1 else parts


def cmd_summary(a) -> int:
    from rog.models.summary import summarize
    from rog.plan import Plan, plan_for
    if a.plan:
        plan = Plan.load(a.plan)
    else:
        plan = plan_for(a.channels, a.classes, [_parse_triple(s) for s in a.strides], width=a.width,
                        patch_size=_parse_triple(a.input or "96"))
    rows = summarize(plan, _parse_triple(a.input) if a.input else None, a.models)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'model':<10} {'parameters':>12} {'GFLOPs':>9}  input")
        for r in rows:
            print(f"{r['model']:<10} {r['parameters']:>12,} {r['gflops']:>9.2f}  {'x'.join(map(str, r['input']))}")
    return 0


def _load_model(a):
    """(model, plan, RunDir or None) from a run directory or --model/--checkpoint/--plan."""
    from rog.checkpoint import load_external, load_run
    from rog.rundir import RunDir
    if a.model:
        if not a.plan:
            raise FileNotFoundError("--model needs --plan (and usually --checkpoint)")
        model, plan = load_external(a.model, a.checkpoint, a.plan)
        return model, plan, None
    if not a.run:
        raise FileNotFoundError("give a run directory, or --model with --plan")
    model, plan, _ = load_run(a.run)
    return model, plan, RunDir(a.run)


def cmd_predict(a) -> int:
    from rog.infer.predictor import cases_from_input, predict_cases
    model, plan, run = _load_model(a)
    steps = None
    if a.postprocess == "on":
        steps = {"largest_component": True, "small_lesions": True}
    elif a.postprocess == "auto" and run is not None:
        steps = run.postprocessing_steps()
    cases = cases_from_input(a.input)
    from rog.devices import resolve_device
    from rog.infer.predictor import StageTimes
    times = StageTimes()
    status = predict_cases(model, plan, cases, a.output, resolve_device(a.device), a.overlap,
                           [0, 1, 2] if a.tta else None, steps, times=times)
    if a.verbose:
        print("seconds per stage, all cases: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    failed = {k: v for k, v in status.items() if v != "ok"}
    print(f"predicted {len(status) - len(failed)} of {len(status)} case(s) into {a.output}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def cmd_evaluate(a) -> int:
    from rog.evaluate.folders import evaluate_folders
    out = Path(a.out) if a.out else Path(a.pred) / "summary"
    s = evaluate_folders(a.pred, a.gt, a.classes, out, a.tolerance)
    for k in range(s["num_classes"] - 1):
        d, h, n = (s["mean"][m][k] for m in ("dice", "hd95", "nsd"))
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
        print(f"class {k + 1}: Dice {fmt(d)}  HD95 {fmt(h)} mm  NSD {fmt(n)}")
    print(f"{len(s['cases'])} case(s); summary in {out}.json and {out}.csv")
    if s["missing_predictions"]:
        print(f"rog evaluate: error: {a.pred}: no prediction for {len(s['missing_predictions'])} reference(s): "
              f"{', '.join(s['missing_predictions'])}", file=sys.stderr)
        return 1
    return 0


def _run_sweep(a, job, config, folder: str) -> tuple[dict, Path]:
    """Run `job` (`bench.job.benchmark` or `corruption_sweep`) with `config` on the model and
    cases of `rog attack` / `rog corrupt`; results go to -o, else WORKDIR/attacks/RUN-FOLDER.
    Returns (results document, {} on torchrun ranks > 0; output folder)."""
    from rog.devices import init_distributed, resolve_device
    if a.nnunet or a.bundle:
        return _run_external(a, config, "attack" if folder in ("patch", "volume") else "corruption")
    model, plan, run = _load_model(a)
    if a.data:
        data = Path(a.data)
    elif run is not None:
        data = run.workdir.preprocessed
    else:
        raise FileNotFoundError("--model needs --data (a preprocessed folder)")
    default = run.workdir.results(f"{run.name}-{folder}").path if run else Path(f"rog_{folder}")
    out = Path(a.out) if a.out else default
    device = resolve_device(a.device)
    init_distributed()
    doc = job(model, plan, data, out, config, run=run, model_name=a.model,
              weights=run.weights() if run else a.checkpoint, names=a.cases, max_cases=a.max_cases,
              label=a.label, device=device)
    return doc, out


def _run_external(a, config, kind: str) -> tuple[dict, Path]:
    """`_run_sweep` for an nnU-Net model folder or a MONAI bundle: the tool's own preprocessing
    of --images/--labels, whole cases. Results go to -o, else ./rog_TOOL-KIND."""
    from rog.atomic import writable_dir
    from rog.bench.job import external
    from rog.devices import init_distributed, resolve_device
    tool = "nnunet" if a.nnunet else "bundle"
    if a.nnunet and a.bundle:
        raise UsageError("give --nnunet or --bundle, not both")
    if not (a.images and a.labels):
        raise UsageError(f"--{tool} needs --images and --labels")
    if a.nnunet:
        from rog.external.nnunet import load_nnunet
        model = load_nnunet(a.nnunet, a.fold, tta=a.tta)
    else:
        from rog.external.bundle import load_bundle
        model = load_bundle(a.bundle)
    device = resolve_device(a.device)
    cases = model.load_cases(a.images, a.labels, a.cases, a.max_cases, device)
    out = writable_dir(a.out or f"rog_{tool}-{kind}")
    init_distributed()
    return external(kind, model, cases, out, config, label=a.label, device=device), out


def cmd_attack(a) -> int:
    small = [e for e in a.eps if e < 1]
    if small:
        print(f"rog attack: note: eps is on the /255 scale of each channel's range: --eps {small[0]:g} means "
              f"{small[0]:g}/255 (for 8/255 give 8)", file=sys.stderr)
    from rog.bench import BenchmarkConfig
    from rog.bench.job import benchmark
    external = a.nnunet or a.bundle
    scope = a.scope or ("volume" if external else "patch")
    if external and scope == "patch":
        raise UsageError("--scope patch: nnU-Net and MONAI bundle models are attacked on whole cases (--scope "
                         "volume, their default)")
    config = BenchmarkConfig(eps=a.eps, attacks=a.attacks, iters=a.iters, queries=a.queries, scope=scope,
                             norm=a.norm, seed=a.seed)
    doc, out = _run_sweep(a, benchmark, config, scope)
    if not doc:
        return 0  # a non-zero rank: rank 0 merges and reports
    s = doc["summary"]
    print(f"{len(doc['clean'])} case(s): {doc['meta']['cases_source_text']}")
    print(f"clean Dice {s['clean_dice']:.4f}, success threshold tau = {s['tau']:.4f}")
    for eps, e in sorted(s["eps"].items(), key=lambda kv: float(kv[0])):
        print(f"eps {float(eps):>5g}/255: worst-case Dice {e['worst_case_dice']:.4f}, "
              f"robust accuracy {e['robust_accuracy']:.3f}")
    _print_checks(doc, out)
    return 0


def _print_checks(doc: dict, out: Path) -> None:
    for c in doc["checks"]:
        print(f"check {c['status'].upper():>7}: {c['name']}: {c['detail']}")
    print(f"results in {out}")


def cmd_corrupt(a) -> int:
    from rog.bench.corruption import CorruptionConfig
    from rog.bench.job import corruption_sweep
    config = CorruptionConfig(corruptions=a.corruptions, severities=a.severities, seed=a.seed)
    doc, out = _run_sweep(a, corruption_sweep, config, "corruptions")
    if not doc:
        return 0  # a non-zero rank: rank 0 merges and reports
    s = doc["summary"]
    print(f"{len(doc['clean'])} case(s): {doc['meta']['cases_source_text']}; clean Dice {s['clean_dice']:.4f}")
    head = " ".join(f"{'sev ' + str(v):>7}" for v in config.severities)
    print(f"{'corruption':<11} {head}  {'mean':>6}  rel. AUC")
    for name, c in s["corruptions"].items():
        cells = " ".join(f"{c['severity'][str(v)]:>7.4f}" for v in config.severities)
        print(f"{name:<11} {cells}  {c['mean_dice']:>6.4f}  {c['relative_auc']:.3f}")
    print(f"mean corruption Dice {s['mean_corruption_dice']:.4f}")
    _print_checks(doc, out)
    return 0


# options of `rog train` that are TrainConfig fields; unset unless given on the command line,
# so that TrainConfig's defaults apply to a new run and a resumed run keeps its own values
TRAIN_OPTIONS = ("epochs", "iterations", "batch_size", "lr", "patience", "fold", "seed", "model", "adv", "augment",
                 "eps", "replays", "divide_epochs", "pgd_steps", "init_from", "precision", "device", "workers",
                 "save_every", "tensorboard")


def cmd_train(a) -> int:
    from rog.workdir import train_run
    given = {k: getattr(a, k) for k in TRAIN_OPTIONS if hasattr(a, k)}
    if a.resume:
        changed = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        print("rog train: resuming with the run's own config.json and plan.json"
              + (f"; given here, overriding it: {changed}" if changed else ""), file=sys.stderr)
    result = train_run(a.dataset, a.workdir, a.name, given, resume=a.resume, width=a.width,
                       postprocessing=not a.no_postprocessing, overwrite=a.overwrite)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"trained {result['epochs']} epoch(s); best validation Dice on centred patches "
              f"{result['best_val_dice']:.4f}")
        if "postprocessing" in result:
            pp = result["postprocessing"]
            print(f"validation Dice on whole volumes (sliding window): {pp['dice_without']:.4f}, "
                  f"with the kept post-processing {pp['dice_with']:.4f}; kept: {pp['steps']}")
    return 0


def cmd_report(a) -> int:
    from rog.report.build import build_report
    summary = build_report(a.inputs, a.out, a.table_eps, panels=not a.no_panels, baseline=a.baseline)
    for name, m in summary["models"].items():
        print(f"{name}: clean Dice {m['clean_dice']:.4f}, AUC {m['auc_worst_case']:.3f}")
    for name, m in summary["corruptions"].items():
        print(f"{name}: mean corruption Dice {m['mean_corruption_dice']:.4f}"
              + (f", mCE {m['mce']:.2f}" if m["mce"] is not None else ""))
    print(f"report written to {Path(a.out) / 'report.html'}")
    return 0


def cmd_demo(a) -> int:
    from rog.demo import run_demo
    workdir = a.workdir or ("rog_work/demo" if a.task == "nuclei" else "rog_work/demo-synthetic")
    return run_demo(Path(workdir), quick=a.quick, task=a.task)


def cmd_nuclei(a) -> int:
    from rog.atomic import writable_dir
    from rog.data.nuclei import make_nuclei_task
    if (Path(a.out) / "dataset.json").exists():
        raise UsageError(f"{a.out}: already holds a dataset (dataset.json); choose another folder")
    out = make_nuclei_task(writable_dir(a.out))
    meta = json.loads((out / "dataset.json").read_text())
    print(f"{meta['name']}: {meta['numTraining']} training and {meta['numTest']} test cases at {out} "
          f"({meta['description']})")
    return 0


def cmd_run_paper(a) -> int:
    from rog.data.dataset import load_dataset
    from rog.demo import PAPER, run_experiment
    ds = load_dataset(a.dataset)
    return run_experiment(Path(a.dataset), Path(a.workdir or Path("rog_work") / ds.name), PAPER, a.device)


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
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("check", help="list every problem of a dataset folder")
    s.add_argument("dataset")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_check)

    for name, fn, helptext in (("plan", cmd_plan, "fingerprint the dataset and write plan.json"),
                               ("preprocess", cmd_preprocess, "preprocess every case into the work directory")):
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
    s.set_defaults(fn=cmd_summary)

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
    s.set_defaults(fn=cmd_train)

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
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("evaluate", help="Dice, HD95 and surface Dice of predictions against references")
    s.add_argument("pred")
    s.add_argument("gt")
    s.add_argument("--classes", type=_number(int, 2), default=None, help="number of classes incl. background")
    s.add_argument("--tolerance", type=_number(float, 0, lo_open=True), default=1.0,
                   help="surface Dice tolerance in mm")
    s.add_argument("-o", "--out", default=None, help="output path stem (default PRED/summary)")
    s.set_defaults(fn=cmd_evaluate)

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
    s.set_defaults(fn=cmd_attack)

    s = sub.add_parser("corrupt", help="robustness to scanner artefacts: corruptions x severities (TorchIO)")
    s.add_argument("run", nargs="?", help="run directory (or --model/--plan/--data)")
    s.add_argument("--corruptions", nargs="+", default=["all"],
                   help="noise, blur, bias, motion, ghosting, spike, gamma, anisotropy, or 'all'")
    s.add_argument("--severities", type=_number(int, 1, 5), nargs="+", default=[1, 2, 3, 4, 5], help="1 to 5")
    _model_source_arguments(s)
    s.set_defaults(fn=cmd_corrupt)

    s = sub.add_parser("report", help="HTML report with the paper's figures and tables")
    s.add_argument("inputs", nargs="+", help="results folders (attack or corruption) or run folders")
    s.add_argument("-o", "--out", default="rog_report")
    s.add_argument("--table-eps", type=EPS, default=8.0)
    s.add_argument("--no-panels", action="store_true", help="skip the qualitative figure")
    s.add_argument("--baseline", help="label of the model corruption errors are relative to (ImageNet-C's mCE)")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("demo", help="the paper's experiment end to end: three models, three seeds, attacks, report")
    s.add_argument("--quick", action="store_true", help="smaller budgets (two seeds)")
    s.add_argument("--task", default="nuclei", choices=["nuclei", "synthetic"],
                   help="nuclei: real brain templates (default); synthetic: the embedded CT-like phantoms")
    s.add_argument("-w", "--workdir", default=None, help="work directory (default rog_work/demo or rog_work/demo-synthetic)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("nuclei", help="write the deep grey nuclei task from installed brain templates and atlases")
    s.add_argument("out", nargs="?", default="rog_data/Nuclei")
    s.set_defaults(fn=cmd_nuclei)

    s = sub.add_parser("run-paper", help="the paper's experiment with its settings on a real MSD task")
    s.add_argument("dataset")
    s.add_argument("-w", "--workdir", default=None)
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_run_paper)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (RogError, FileNotFoundError, PermissionError) as e:
        if args.debug:
            raise
        print(f"rog {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"rog {args.command}: interrupted; finished work is kept (run the same command to resume)",
              file=sys.stderr)
        return 130
