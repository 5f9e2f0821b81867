"""`rog report`: an HTML page, PNG figures and a JSON summary from benchmark results.

Each input is a results folder (`rog.rundir.ResultsDir`) or a run folder, in which case the
results folders of that run (`WORKDIR/attacks/RUN-*`) are used. The report only renders what
the benchmark recorded (`rog.results`: results, model summary and class names in their
metadata) and the qualitative arrays of the worst attack; it loads no model, runs no attack
and imports no torch. The page itself is `rog.report.page`'s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rog.atomic import write_json, write_text
from rog.evaluate.artefact import summarize_artefacts
from rog.evaluate.bracket import brackets, l2_attacks
from rog.evaluate.corruption import corruption_errors
from rog.evaluate.robustness import auc
from rog.evaluate.seeds import SeedRun, across_seeds, auc_gain, mean_sd
from rog.report import figures, page
from rog.report.viewer import write_viewer
from rog.report.summary import CorruptionScores, Learning, ModelScores, ReportSummary, Seeds, Tau
from rog.results import EPS_SHORT, AttackSummary, Results, ResultsError
from rog.rundir import ResultsDir, RunDir

if TYPE_CHECKING:  # the atlas module reads NIfTI through torch-importing modules; the report needs the type only
    from rog.evaluate.atlas import AtlasReference


@dataclass
class Entry:
    """One finished results folder as the report draws it: `name` (unique in the report),
    `group` (the model's label, shared by its training seeds). `shared`: the eps keys every
    entry of the report has, where their grids differ (None: one grid); every figure of the
    entry is then over those eps only, its AUC over their range (`common_eps`). `tau`: the
    report's success threshold (`report_tau`; None: the results' own), which its robust
    accuracies use."""

    name: str
    folder: ResultsDir
    results: Results
    panels: dict = field(default_factory=dict)
    shared: list | None = None
    tau: float | None = None

    @property
    def group(self) -> str:
        return self.results.meta.label or self.folder.path.name

    @property
    def seed(self) -> int | None:
        return self.results.meta.seed

    @property
    def summary(self) -> AttackSummary:
        full = self.results.summary
        eps = full.eps if self.shared is None else {k: full.eps[k] for k in self.shared}
        if self.tau is not None:  # the share of cases whose worst case stays at or above the report's tau
            worst = self.case_worst()
            eps = {k: replace(v, robust_accuracy=_share([w[k] >= self.tau for w in worst.values() if k in w]))
                   for k, v in eps.items()}
            full = replace(full, tau=self.tau)
        if self.shared is None:
            return replace(full, eps=eps)
        curve = sorted((float(k), v.worst_case_dice) for k, v in eps.items())
        return replace(full, eps=eps, auc_worst_case=auc([0.0] + [e for e, _ in curve],
                                                         [full.clean_dice] + [d for _, d in curve]))

    @property
    def cases(self) -> list[str]:
        return sorted(self.results.clean)

    @property
    def class_names(self) -> list[str]:
        k = self.results.num_classes - 1
        return self.results.meta.class_names or [f"class {c}" for c in range(1, k + 1)]

    def clean_per_class(self) -> list:
        return np.nanmean(np.array([c.dice_per_class for c in self.results.clean.values()], float), axis=0).tolist()

    def curve(self) -> tuple[list, list, list]:
        """(eps with 0 = clean, worst-case mean Dice, worst-case Dice per class)."""
        items = self.summary.eps_items()
        return ([0.0] + [float(e) for e, _ in items], [self.summary.clean_dice] + [v.worst_case_dice for _, v in items],
                [self.clean_per_class()] + [v.worst_case_dice_per_class for _, v in items])

    def attack_curve(self, attack: str) -> tuple[list, list] | None:
        """(eps, mean Dice) under `attack` at its smallest budget, eps 0 = clean; None if never run."""
        eps, dice = [0.0], [self.summary.clean_dice]
        for e, v in self.summary.eps_items():
            ids = sorted((a for a in v.attacks if a.split("@")[0] == attack), key=lambda a: int(a.split("@")[1]))
            if ids:
                eps.append(float(e))
                dice.append(v.attacks[ids[0]])
        return (eps, dice) if len(eps) > 1 else None

    def case_worst(self) -> dict[str, dict[str, float]]:
        """Per case: clean Dice (eps "0.0") and the worst Dice over attacks' valid points at each
        eps (none valid: the clean Dice, as `rog.evaluate.robustness.summarize`)."""
        out = {case: {"0.0": c.dice} for case, c in self.results.clean.items()}
        valid: dict[tuple[str, str], list] = {}
        for r in self.results.measured():
            key = str(float(r.eps))
            if self.shared is None or key in self.shared:
                valid.setdefault((r.case, key), [])
                if r.valid():
                    valid[r.case, key].append(r.dice)
        for (case, key), dice in valid.items():
            out[case][key] = min(dice) if dice else out[case]["0.0"]
        return out

    def runtime(self) -> dict[str, float]:
        """Total attack seconds per attack id."""
        out: dict[str, float] = {}
        for r in self.results.measured():
            out[r.attack_id] = out.get(r.attack_id, 0.0) + r.seconds
        return out

    def skipped(self) -> list[str]:
        return sorted({r.skipped for r in self.results.records if r.skipped})

    def panel(self, eps_key: str) -> tuple[str, dict] | None:
        """(row title, qualitative arrays) of the worst attack at `eps_key`, None if not recorded."""
        arrays = self.panels.get(eps_key)
        return (f"{self.name}\n{self.cases[0]}", arrays) if arrays else None


def _share(hits: list) -> float:
    """The share of True in `hits`; NaN where there is none (no case measured)."""
    return float(np.mean(hits)) if hits else float("nan")


def common_eps(entries: list[Entry]) -> list[str] | None:
    """Compare like with like: where the entries were attacked at different eps, restrict each
    to the eps they all have (sorted keys; None where they share one grid). A report whose runs
    share no eps is refused, naming the grids."""
    grids = {e.name: sorted(e.results.summary.eps, key=float) for e in entries}
    if len({tuple(g) for g in grids.values()}) == 1:
        return None
    shared = sorted(set.intersection(*(set(g) for g in grids.values())), key=float)
    if not shared:
        raise ResultsError("no eps common to every attack result: " + "; ".join(
            f"{n} {'/'.join(f'{float(k):g}' for k in g)}" for n, g in grids.items()) + " (report them apart)")
    for e in entries:
        e.shared = shared
    return shared


def eps_unit(entries: list[Entry]) -> str:
    """The one unit of every entry's eps (`rog.bench.units.UNITS`; "range" for results that name
    none); results in several units are a `ResultsError`: their eps are not one axis."""
    units = {(e.results.threat or {}).get("unit", "range") for e in entries}
    if len(units) > 1:
        raise ResultsError(f"the attack results give eps in {' and '.join(sorted(units))} units (--eps-unit): their "
                          "Dice-vs-eps curves share no axis; make one report per unit")
    return units.pop() if units else "range"


def report_tau(models: list[tuple[str, float]], tau: float | None = None, source: str | None = None) -> Tau:
    """One tau for every model of the report, as the paper's (half the mean clean performance
    in the task) and AutoAttack's one definition of success. `models`: (label, own tau) of each
    results folder, in the report's order (a label's seeds share it). Returns `tau` where
    given, else half the mean clean Dice of the model labelled `source` (over its seeds: the
    mean of their own tau; default: the first model's). An unknown label is refused, naming
    the labels."""
    if tau is not None:
        return Tau(float(tau), "--tau")
    labels = list(dict.fromkeys(label for label, _ in models))
    source = source or labels[0]
    if source not in labels:
        raise ResultsError(f"--tau-from {source!r}: no such model in the report (models: {', '.join(labels)})")
    return Tau(float(np.mean([t for label, t in models if label == source])), source)


def _find_results(inputs: list[str | Path]) -> list[ResultsDir]:
    found = []
    for p in map(Path, inputs):
        if ResultsDir(p).exists():
            found.append(ResultsDir(p))
        elif RunDir(p).is_run():
            found += RunDir(p).workdir.results_of(RunDir(p))
        else:
            raise FileNotFoundError(f"{p}: neither a results folder (results.json) nor a run folder")
    if not found:
        raise FileNotFoundError("no attack results found in " + ", ".join(map(str, inputs)))
    return found


def _finished(folder: ResultsDir) -> Results:
    results = folder.read()
    if not results.finished:
        raise FileNotFoundError(f"{folder.results()}: the run has not finished (no summary)")
    return results


def _unique_names(entries: list[Entry]) -> None:
    """Entries sharing a label are told apart by their training seed, else by their folder."""
    names = [e.name for e in entries]
    if len(set(names)) == len(names):
        return
    for e in entries:
        if names.count(e.name) > 1 and e.seed is not None:
            e.name = f"{e.name}@s{e.seed}"
    if len({e.name for e in entries}) != len(entries):
        for e in entries:
            e.name = e.folder.path.name


def _seed_groups(entries: list[Entry]) -> dict:
    """`across_seeds` of each label's entries (one per training seed)."""
    by_group: dict[str, dict] = {}
    for i, e in enumerate(entries):
        seed = e.seed if e.seed is not None else i
        by_group.setdefault(e.group, {})[seed] = SeedRun(
            e.summary.clean_dice, e.summary.auc_worst_case,
            {k: v.worst_case_dice for k, v in e.summary.eps.items()}, e.case_worst())
    return {g: across_seeds(runs) for g, runs in by_group.items()}


def findings(groups: dict) -> list:
    """The report's finding where none was asked for: the most robust model label (the highest
    mean worst-case AUC over its seeds) and its `auc_gain` over each other label, on the cases
    they share (none where there is one label or no shared case)."""
    if len(groups) < 2:
        return []
    best = max(groups, key=lambda g: groups[g].auc_worst_case.mean)
    return [g for other in groups if other != best and (g := auc_gain(groups, best, other))]


def build_report(inputs: list[str | Path], out: str | Path, table_eps: float = 8.0, panels: bool = True,
                 baseline: str | None = None, gain: tuple[str, str] | None = None,
                 reference: AtlasReference | None = None, tau: float | None = None,
                 tau_from: str | None = None) -> ReportSummary:
    """Write OUT/report.html, OUT/*.png and OUT/summary.json.

    Args:
        inputs: results folders (attack, corruption, artefact, certify or modality) or run folders
            (their results). A certify folder is drawn as a bracket with the whole-case L2
            attacks of the same model among them (`rog.evaluate.bracket`), which then stay out
            of the attack sections.
        out: the report's folder.
        table_eps: the eps of the per-attack table and the panels.
        panels: draw the qualitative figure.
        baseline: the model label corruption errors are relative to (ImageNet-C's mCE).
        gain: (defended, reference) labels: the first's AUC gain over the second with a
            t-interval over training seeds (`rog.evaluate.seeds.auc_gain`).
        reference: the atlas-transfer reference (`rog.evaluate.atlas`), set beside each
            model's whole-case test Dice.
        tau: the success threshold of every robust accuracy (default: half the mean clean
            Dice of the model labelled `tau_from`, `report_tau`).
        tau_from: that model's label (default: the gain's reference where `gain` is given,
            else the first model's).

    Returns:
        The `ReportSummary`. Results of one label from several training seeds are aggregated
        (mean +- sd over seeds, per-case points).
    """
    out = Path(out)
    docs = [(f, _finished(f)) for f in _find_results(inputs)]
    # every file read before anything is written: a broken one leaves no half-made report
    qualitative = {f.path: f.read_qualitative() for f, r in docs if r.kind == "attack"}
    attacked = [r for _, r in docs if r.kind == "attack"]
    certified = [(r.meta.label or f.path.name, f.path.name, r) for f, r in docs if r.kind == "certify"]
    certified = [(label if [c[0] for c in certified].count(label) == 1 else folder, r) for label, folder, r in certified]
    # the L2 attacks that bracket a certificate are its upper side, not a model of the attack sections
    bracketing = {id(a) for _, c in certified for a in l2_attacks(c, attacked)}
    entries = [Entry(r.meta.label or f.path.name, f, r, qualitative[f.path]) for f, r in docs
               if r.kind == "attack" and id(r) not in bracketing]
    _unique_names(entries)
    # refused before anything is written
    unit = eps_unit(entries)  # first: eps in two units have nothing in common to say
    summary = ReportSummary(common_eps=common_eps(entries) if entries else None, eps_unit=unit)
    artefact = [(r.meta.label or f.path.name, f, r) for f, r in docs if r.kind == "artefact"]
    scored = [(e.group, e.results.tau) for e in entries] + [(name, r.tau) for name, _, r in artefact]
    if scored:  # robust accuracies, of attacks and of artefacts, all at the task's one tau
        summary.tau = report_tau(scored, tau, tau_from or (gain[1] if gain else None))
        for e in entries:
            e.tau = summary.tau.value
        artefact = [(name, f, replace(r, summary=summarize_artefacts(r.records, r.clean, summary.tau.value)))
                    for name, f, r in artefact]
    out.mkdir(parents=True, exist_ok=True)
    corruption = [(r.meta.label or f.path.name, r) for f, r in docs if r.kind == "corruption"]
    summary.corruptions = _corruptions(corruption, out, baseline)
    summary.artefacts = {name: r.summary for name, _, r in artefact}
    modality = [(r.meta.label or f.path.name, r) for f, r in docs if r.kind == "modality"]
    summary.modalities = {name: r.summary for name, r in modality}
    worst, artefact_figs = _artefacts(artefact, out, panels)
    summary.certified = {name: brackets(r, attacked) for name, r in certified}
    saved = _saved_volumes(docs)
    if certified:
        figures.brackets(out / "certified.png", summary.certified)
    corruption_html = (page.corruptions(corruption, summary.corruptions, baseline)
                       + page.artefacts([(name, r) for name, _, r in artefact], worst,
                                        "artefact_panels.png" in artefact_figs, summary.tau)
                       + page.certified(summary.certified)
                       + page.modalities(modality)
                       + page.volumes(_volume_links(saved, out), write_viewer(out, saved)))
    tail_figs = (["dice_vs_severity.png"] if corruption else []) + artefact_figs + (["certified.png"] if certified else [])
    if not entries:
        summary.figures = tail_figs
        write_json(out / "summary.json", summary.to_json())
        write_text(out / "report.html", page.HEAD + corruption_html + "</body></html>")
        return summary
    groups = _seed_groups(entries)
    summary.seeds = Seeds(groups, auc_gain(groups, *gain) if gain else None, [] if gain else findings(groups))
    class_names = entries[0].class_names
    axis = f"eps ({EPS_SHORT[summary.eps_unit].strip()})"
    aucs = figures.dice_vs_eps(out / "dice_vs_eps.png", {e.name: e.curve() for e in entries}, class_names, axis)
    curves = {e.name: {a: c for a in ("pgd", "apgd-ce") if (c := e.attack_curve(a))} for e in entries}
    both = any(len(c) == 2 for c in curves.values())  # the section compares the two: only where both ran
    pgd_aucs = figures.pgd_vs_apgd(out / "pgd_vs_apgd.png", curves, axis) if both else {}
    eps_keys = {float(k): k for k in entries[0].summary.eps}
    t_eps = table_eps if table_eps in eps_keys else max(eps_keys)
    figs = ["dice_vs_eps.png"] + (["pgd_vs_apgd.png"] if pgd_aucs else [])
    if any(len(g.seeds) > 1 for g in groups.values()):
        figures.across_seeds(out / "seeds.png", groups, axis)
        figs.append("seeds.png")
    if panels:  # one seed's models: the panels compare models, not training runs
        first = {g: min(e.seed or 0 for e in entries if e.group == g) for g in groups}
        rows = [p for e in entries if (e.seed or 0) == first[e.group] and (p := e.panel(eps_keys[t_eps]))]
        if rows:
            figures.qualitative(out / "qualitative.png", rows, entries[0].results.num_classes,
                                class_names=class_names)
            figs.append("qualitative.png")
    for e in entries:
        info = e.results.meta.model
        summary.models[e.name] = ModelScores(
            e.summary.clean_dice, e.clean_per_class(), aucs[e.name], pgd_aucs.get(e.name), e.summary.eps,
            e.results.tau, {c.name: c.status for c in e.results.checks}, info.parameters if info else None,
            info.gflops if info else None, e.results.meta.test)
    summary.table_eps = t_eps
    summary.learning = _learning(entries, reference)
    summary.figures = figs + tail_figs
    write_json(out / "summary.json", summary.to_json())
    write_text(out / "report.html", page.render(entries, summary, class_names, t_eps, eps_keys[t_eps], figs,
                                                corruption_html))
    return summary


def _saved_volumes(docs: list[tuple[ResultsDir, Results]]) -> dict:
    """{"label (kind)": {case: {volume name: file}}} of the volumes `--save-volumes` wrote."""
    return {f"{r.meta.label or f.path.name} ({r.kind})": vols for f, r in docs if (vols := f.volumes())}


def _volume_links(saved: dict, out: Path) -> dict:
    """`saved` (`_saved_volumes`) as {model: {case: [(file name, path relative to the report)]}}."""
    return {model: {case: [(name, os.path.relpath(p, out)) for name, p in files.items()] for case, files in cases.items()}
            for model, cases in saved.items()}


def _corruptions(entries: list[tuple[str, Results]], out: Path, baseline: str | None) -> dict:
    """Each corruption results' scores (mCE relative to the model labelled `baseline`), and
    their figure; empty when there are none."""
    if not entries:
        return {}
    figures.dice_vs_severity(out / "dice_vs_severity.png", {name: r.summary for name, r in entries})
    base = next((r.summary for name, r in entries if name == baseline), None)
    return {name: CorruptionScores(r.summary.clean_dice, r.summary.mean_corruption_dice, r.summary.corruptions,
                                   corruption_errors(r.summary, base)[1] if base else None) for name, r in entries}


def _artefacts(docs: list[tuple[str, ResultsDir, Results]], out: Path, panels: bool) -> tuple[dict, list[str]]:
    """Draw the (label, folder, results) artefact sweeps' figures (Dice vs severity, random and worst case; with
    `panels`, the slices of each worst artefact at the highest severity); return per label
    {artefact: (case, found by, parameters)} of the lowest-Dice case at the highest severity,
    and the figures' file names."""
    if not docs:
        return {}, []
    figures.random_vs_worst(out / "artefacts.png", {name: r.summary for name, _, r in docs})
    worst, rows = {}, []
    for name, f, r in docs:
        top = max(int(k) for v in r.summary.artefacts.values() for k in v.worst)
        at_top = [x for x in r.records if x.severity == top]
        worst[name] = {a: (w.case, w.by, w.parameters) for a in r.summary.artefacts
                       if (w := min((x for x in at_top if x.artefact == a), key=lambda x: x.dice, default=None))}
        rows += [(f"{name}: {k}", p) for k, p in f.read_qualitative().items()]
    if not (panels and rows):
        return worst, ["artefacts.png"]
    figures.qualitative(out / "artefact_panels.png", rows, docs[0][2].num_classes, "worst artefact",
                        docs[0][2].meta.class_names or None)
    return worst, ["artefacts.png", "artefact_panels.png"]


def _learning(entries: list[Entry], reference: AtlasReference | None) -> Learning | None:
    """Whole-case test Dice (mean over classes) of each model label, mean +- sd over its seeds,
    beside the atlas-transfer reference; None without a reference."""
    if reference is None or reference.dice is None:
        return None
    tests: dict[str, list[float]] = {}
    for e in entries:
        dice = e.results.meta.test_dice()
        if dice:
            tests.setdefault(e.group, []).append(float(np.nanmean(np.array(dice, float))))
    return Learning(reference, reference.best_single(), {g: mean_sd(v) for g, v in tests.items()})
