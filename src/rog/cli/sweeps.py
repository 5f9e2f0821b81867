"""The benchmark commands, `rog attack`, `rog corrupt`, `rog modality`, `rog artefact` and `rog certify`: each builds its
configuration, runs `rog.pipeline.sweeps` and prints the summary and the validity checks."""
from __future__ import annotations

import sys
from collections import Counter

from rog.results import EPS_SHORT


def _sweep(a, config):
    """Run `rog attack`, `rog corrupt`, `rog artefact` or `rog certify` with `config`; None on torchrun ranks > 0."""
    from rog.pipeline.sources import source_from
    from rog.pipeline.sweeps import SweepRequest, run_sweep
    result = run_sweep(SweepRequest(source_from(vars(a)), config, a.cases, a.max_cases, a.label, a.out, a.device,
                                    save_volumes=a.save_volumes))
    r = result.results
    if r is not None:
        print(f"{len(r.clean)} case(s): {r.meta.cases_source_text}; clean Dice {r.summary.clean_dice:.4f}")
    return result


def _summary(a, config):
    """(the sweep's result, its summary) of `config`; the summary None on torchrun ranks > 0,
    where rank 0 merges and reports."""
    result = _sweep(a, config)
    return result, None if result.results is None else result.results.summary


def _checks(result) -> int:
    """Print every validity check; a failed one also on stderr, and the exit code is then 1 (the
    results are written, but may overestimate robustness)."""
    for c in result.results.checks:
        print(f"check {c.status.upper():>7}: {c.name}: {c.detail}")
    print(f"results in {result.out}")
    failed = [c for c in result.results.checks if c.status == "fail"]
    for c in failed:
        print(f"rog: warning: validity check failed: {c.name}: {c.detail}", file=sys.stderr)
    return 1 if failed else 0


def cmd_attack(a) -> int:
    small = [e for e in a.eps if e < 1]
    if small and a.eps_unit == "range":
        print(f"rog attack: note: eps is on the /255 scale of each channel's range: --eps {small[0]:g} means "
              f"{small[0]:g}/255 (for 8/255 give 8)", file=sys.stderr)
    from rog.bench import BenchmarkConfig
    result, s = _summary(a, BenchmarkConfig(eps=a.eps, attacks=a.attacks, iters=a.iters, queries=a.queries,
                                            scope=a.scope, norm=a.norm, seed=a.seed, eps_unit=a.eps_unit,
                                            eps_channels=a.eps_channels))
    if s is None:
        return 0
    print(f"success threshold tau = {s.tau:.4f}")
    for eps, e in s.eps_items():
        found = Counter(e.found_by.values())
        print(f"eps {float(eps):>5g}{EPS_SHORT[a.eps_unit]}: worst-case Dice {e.worst_case_dice:.4f}, "
              f"robust accuracy {e.robust_accuracy:.3f}"
              + ("; worst case found by " + ", ".join(f"{a} {n}" for a, n in found.most_common()) if found else "")
              + (f"; lesions at the worst cases: {e.lesions_missed} missed, {e.lesions_invented} invented, "
                 f"cases with no lesion lost {e.lesion_robust_accuracy:.3f}" if e.lesions_missed is not None else ""))
    return _checks(result)


def cmd_corrupt(a) -> int:
    from rog.bench import CorruptionConfig
    result, s = _summary(a, config := CorruptionConfig(corruptions=a.corruptions, severities=a.severities, seed=a.seed))
    if s is None:
        return 0
    print(f"{'corruption':<11} " + " ".join(f"{'sev ' + str(v):>7}" for v in config.severities)
          + f"  {'mean':>6}  rel. AUC")
    for name, c in s.corruptions.items():
        cells = " ".join(f"{c.severity[str(v)]:>7.4f}" for v in config.severities)
        print(f"{name:<11} {cells}  {c.mean_dice:>6.4f}  {c.relative_auc:.3f}")
    print(f"mean corruption Dice {s.mean_corruption_dice:.4f}")
    return _checks(result)


def cmd_modality(a) -> int:
    from rog.bench import ModalityConfig
    result, s = _summary(a, config := ModalityConfig(replace=a.replace, channels=a.channels, seed=a.seed))
    if s is None:
        return 0
    print(f"mean Dice (robust accuracy at tau {result.results.tau:.4f}) with each channel replaced")
    print(f"{'channel':<8} " + " ".join(f"{r:>16}" for r in config.replace))
    for ch, by in s.dice.items():
        print(f"{ch:<8} " + " ".join(f"{by[r]:>8.4f} ({s.robust_accuracy[ch][r]:.2f})" for r in config.replace))
    print(f"{'worst':<8} " + " ".join(f"{s.worst[r]:>16.4f}" for r in config.replace))
    return _checks(result)


def cmd_artefact(a) -> int:
    from rog.bench.artefact import ArtefactConfig
    config = ArtefactConfig(artefacts=a.artefacts, severities=a.severities, draws=a.draws, iters=a.iters,
                            restarts=a.restarts, loss=a.loss, search=a.search, seed=a.seed)
    result, s = _summary(a, config)
    if s is None:
        return 0
    print(f"success threshold tau = {s.tau:.4f}; mean Dice: random draw / worst of {config.draws} draws / "
          "worst case (search or draw)")
    for name, st in s.artefacts.items():
        cells = "  ".join(f"sev {v}: {st.random[v]:.3f} / {st.random_worst[v]:.3f} / {st.worst[v]:.3f}"
                          for v in st.levels())
        print(f"{name:<7} {cells}")
    return _checks(result)


def cmd_certify(a) -> int:
    from rog.bench.certify import CertifyConfig
    config = CertifyConfig(sigmas=a.sigmas, samples0=a.samples0, samples=a.samples, alpha=a.alpha, radii=a.radii,
                           correction=a.correction, batch=a.batch, seed=a.seed)
    result, s = _summary(a, config)
    if s is None:
        return 0
    print(f"certified Dice lower bound (share of voxels certified) per L2 radius, each with probability "
          f"{1 - config.alpha:g}; of the smoothed model, not the base model")
    for sigma, st in s.sigmas.items():
        cells = "  ".join(f"r {r}: {st.certified_dice[r]:.3f} ({st.certified_share[r]:.0%})" for r in st.certified_dice)
        print(f"sigma {sigma}: smoothed Dice {st.smoothed_dice:.4f}; {cells}")
    eps = sorted({float(f"{e:.6g}") for rec in result.results.records for e in rec.l2_eps if e > 0})
    if eps:  # each case's own eps: a ball of norm r holds more per-voxel change on a smaller case
        print("the attacked side of these radii (for rog report): rog attack ... --scope volume --norm l2 --eps "
              + " ".join(f"{e:g}" for e in eps))
    return _checks(result)
