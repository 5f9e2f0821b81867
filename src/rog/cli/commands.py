"""One function per `rog` command: it turns the parsed arguments into a call of the library
or a typed request of `rog.pipeline`, and prints what came back. Nothing else lives here."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from rog.errors import UsageError


def _workers(n: int | None) -> int:
    return n if n else min(2, os.cpu_count() or 1)


def cmd_synth(a) -> int:
    from rog.data.dataset import describe
    from rog.data.synthetic import make_task, min_size
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
    from rog.pipeline.stages import ensure_fingerprint, ensure_plan
    from rog.plan import Plan
    from rog.rundir import Workdir
    ds = load_dataset(a.dataset)
    wd = Workdir.for_dataset(ds, a.workdir)
    old = Plan.load(wd.plan) if a.force and wd.plan.is_file() else None
    ensure_fingerprint(ds, wd, _workers(a.workers), force=a.force)
    plan = ensure_plan(ds, wd, _workers(a.workers), force=a.force, model=a.model, width=a.width,
                       spacing=a.spacing)
    print(plan.table())
    print(f"plan written to {wd.plan} (edit it by hand to change any setting)"
          + (f"; changed: {', '.join(plan.changes(old)) or 'nothing'}" if old else ""))
    return 0


def cmd_preprocess(a) -> int:
    from rog.pipeline.stages import run_preprocessing
    wd, _, done = run_preprocessing(a.dataset, a.workdir, _workers(a.workers), include_test=not a.no_test)
    print(f"preprocessed {len(done)} case(s) into {wd.preprocessed} (finished cases are skipped)")
    return 0


def cmd_summary(a) -> int:
    from rog.models.summary import summarize
    from rog.plan import Plan, plan_for
    if a.plan:
        plan = Plan.load(a.plan)
    else:
        plan = plan_for(a.channels, a.classes, a.strides, width=a.width, patch_size=a.input or [96] * 3)
    rows = summarize(plan, a.input, a.models)
    if a.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(f"{'model':<10} {'parameters':>12} {'GFLOPs':>9}  input")
        for r in rows:
            print(f"{r.model:<10} {r.parameters:>12,} {r.gflops:>9.2f}  {'x'.join(map(str, r.input))}")
    return 0


def cmd_predict(a) -> int:
    from rog.pipeline.predict import PredictRequest, predict
    from rog.pipeline.sources import GRID_SOURCES, sources_from
    sources = sources_from(a.runs, vars(a), GRID_SOURCES)
    from rog.certify.smoothing import Smoothing
    smooth = Smoothing(a.smooth, a.samples) if a.smooth else None
    r = predict(PredictRequest(sources, a.input, a.output, a.postprocess, a.overlap, a.tta, a.device,
                               a.save_probabilities, a.resume, smooth, a.dicom_output))
    if a.verbose:
        print("seconds per stage, all cases: " + ", ".join(f"{k} {v:.2f}" for k, v in r.seconds.items()))
    kept = sum(v == "kept" for v in r.status.values())
    print(f"predicted {len(r.status) - len(r.failed) - kept} of {len(r.status)} case(s) into {a.output}"
          + (f" ({kept} kept from before)" if kept else "") + (f"; failed: {', '.join(r.failed)}" if r.failed else "")
          + f"; {len(sources)} model(s), mirroring {'on' if a.tta else 'off'}, post-processing {r.steps or 'none'}"
          + (f"; smoothed: majority vote of {a.samples} copies under noise of sd {a.smooth:g}" if smooth else ""))
    return 1 if r.failed else 0


def cmd_evaluate(a) -> int:
    from rog.evaluate.folders import evaluate_folders
    out = Path(a.out) if a.out else Path(a.pred) / "summary"
    s = evaluate_folders(a.gt, a.pred, a.classes, out, a.tolerance)
    for k in range(s["num_classes"] - 1):
        d, h, n = (s["mean_per_class"][m][k] for m in ("dice", "hd95", "nsd"))
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
        print(f"{s['class_names'][k]}: Dice {fmt(d)}  HD95 {fmt(h)} mm  NSD {fmt(n)}")
    print(f"{len(s['cases'])} case(s); summary in {out}.json and {out}.csv")
    if s["missing_predictions"]:
        print(f"rog evaluate: error: {a.pred}: no prediction for {len(s['missing_predictions'])} reference(s): "
              f"{', '.join(s['missing_predictions'])}", file=sys.stderr)
        return 1
    return 0


def cmd_train(a) -> int:
    from dataclasses import fields
    from rog.pipeline.stages import train_run
    from rog.train.trainer import TrainConfig
    # only the options given: unset ones take TrainConfig's defaults in a new run, the run's own on --resume
    given = {f.name: getattr(a, f.name) for f in fields(TrainConfig) if hasattr(a, f.name)}
    if a.resume:
        changed = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        print("rog train: resuming with the run's own config.json and plan.json"
              + (f"; given here, overriding it: {changed}" if changed else ""), file=sys.stderr)
    result = train_run(a.dataset, a.workdir, a.name, given, resume=a.resume, width=a.width,
                       postprocessing=not a.no_postprocessing, overwrite=a.overwrite)
    if int(os.environ.get("RANK", 0)) == 0:
        by = "Dice on centred patches" if result.selected_by == "patch" else "clean and APGD-CE Dice, whole volumes"
        print(f"trained {result.epochs} epoch(s); best validation {by} {result.best_val_dice:.4f}; "
              f"run folder {result.folder}")
        if result.postprocessing:
            pp = result.postprocessing
            print(f"validation Dice on whole volumes (sliding window): {pp['dice_without']:.4f}, "
                  f"with the kept post-processing {pp['dice_with']:.4f}; kept: {pp['steps']}")
    return 0


def cmd_report(a) -> int:
    from rog.report.build import build_report
    summary = build_report(a.inputs, a.out, a.table_eps, panels=not a.no_panels, baseline=a.baseline, tau=a.tau,
                           tau_from=a.tau_from)
    if summary.tau:
        print(f"every robust accuracy at {summary.tau.text()}")
    for name, m in summary.models.items():
        print(f"{name}: clean Dice {m.clean_dice:.4f}, AUC {m.auc_worst_case:.3f}")
    for name, m in summary.corruptions.items():
        print(f"{name}: mean corruption Dice {m.mean_corruption_dice:.4f}"
              + (f", mCE {m.mce:.2f}" if m.mce is not None else ""))
    for name, m in summary.artefacts.items():
        print(f"{name}: worst-case artefact Dice " + ", ".join(f"severity {k} {v:.4f}" for k, v in m.worst_case.items()))
    for name, per_sigma in summary.certified.items():
        for b in per_sigma:
            print(f"{name}, sigma {b.sigma:g}: certified / attacked Dice " + ", ".join(
                f"r {p.radius:g} {p.certified:.3f} / " + ("n/a" if p.attacked is None else f"{p.attacked:.3f}")
                for p in b.points))
    print(f"report written to {Path(a.out) / 'report.html'}")
    return 0


def _artefact_means(summary) -> str:
    """'0.412 / 0.123 / 0.010 at severities 1 / 3 / 5': each severity's worst case, mean over
    the artefacts, of an `ArtefactSummary`."""
    levels = sorted({k for a in summary.artefacts.values() for k in a.worst}, key=int)
    means = [sum(a.worst[k] for a in summary.artefacts.values()) / len(summary.artefacts) for k in levels]
    return " / ".join(f"{m:.3f}" for m in means) + " at severities " + " / ".join(levels)


def _experiment(result) -> int:
    """Print an experiment's outcome: the dataset's problems, or each model's figures."""
    if result.problems:
        print("\n".join(map(str, result.problems)))
        return 1
    s = result.summary
    for name, g in s.seeds.groups.items():
        c, art = s.corruptions.get(name), s.artefacts.get(name)
        print(f"    {name:<10} clean Dice {g.clean_dice.text()}  worst-case Dice at 8/255 "
              f"{g.eps['8.0'].text() if '8.0' in g.eps else 'n/a'}  AUC {g.auc_worst_case.text()}"
              + (f"  mean corruption Dice {c.mean_corruption_dice:.3f}" if c else "")
              + (f"  worst-case artefact Dice {_artefact_means(art)}" if art else ""))
    if s.seeds.gain:
        print("    " + s.seeds.gain.text)
    print(f"done: open {result.report}")
    return 0


def cmd_demo(a) -> int:
    from rog.demo import DEMOS, WORKDIRS
    from rog.pipeline.experiment import demo_data, run_experiment
    settings, workdir = DEMOS[a.task, a.quick], Path(a.workdir or WORKDIRS[a.task])
    return _experiment(run_experiment(demo_data(workdir, a.task, settings), workdir, settings))


def cmd_nuclei(a) -> int:
    from rog.atomic import writable_dir
    from rog.data.dataset import describe
    from rog.data.nuclei import make_nuclei_task
    print(describe(make_nuclei_task(writable_dir(a.out))))
    return 0


def cmd_run_paper(a) -> int:
    from rog.data.dataset import load_dataset
    from rog.pipeline.experiment import PAPER, run_experiment
    workdir = Path(a.workdir or Path("rog_work") / load_dataset(a.dataset).name)
    return _experiment(run_experiment(Path(a.dataset), workdir, PAPER, a.device))
