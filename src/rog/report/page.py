"""The report's HTML page, from the typed results (`rog.results`) and the report's summary
(`rog.report.summary`), section by section in reading order."""
from __future__ import annotations

import html
import json

import numpy as np

from rog.results import EPS_SHORT

esc = html.escape

HEAD = ("<!doctype html><html><head><meta charset='utf-8'><title>rog robustness report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f2f2f2}.fail{background:#fdd;font-weight:bold}.warn{background:#ffe9b3}"
        ".pass{background:#e3f7e3}img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}"
        "</style></head><body><h1>Robustness report</h1>")


def fmt(v, digits=3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def _checks_table(entries: list) -> str:
    """The validity checks of (name, `Results`) pairs, a row each."""
    rows = "".join(_check_rows(name, r.checks) for name, r in entries)
    return f"<table><tr><th>model</th><th>check</th><th>status</th><th>detail</th></tr>{rows}</table>"


def _check_rows(name: str, checks) -> str:
    return "".join(f"<tr class='{c.status}'><td>{esc(name)}</td><td>{esc(c.name)}</td><td>{c.status}</td>"
                   f"<td style='text-align:left'>{esc(c.detail)}</td></tr>" for c in checks)


def corruptions(entries: list, scores: dict, baseline: str | None) -> str:
    """The section on scanner artefacts: (name, `Results`) pairs and their `CorruptionScores`."""
    if not entries:
        return ""
    names = list(entries[0][1].summary.corruptions)
    rows = "".join(
        f"<tr><td>{esc(n)}</td><td>{fmt(m.clean_dice)}</td>" + "".join(
            f"<td>{fmt(getattr(m.corruptions.get(c), 'mean_dice', None))} "
            f"({fmt(getattr(m.corruptions.get(c), 'relative_auc', None), 2)})</td>" for c in names)
        + f"<td>{fmt(m.mean_corruption_dice)}</td><td>{fmt(m.mce, 2)}</td></tr>" for n, m in scores.items())
    return ("<h2>Scanner artefacts (corruptions)</h2><img src='dice_vs_severity.png' alt='Dice vs severity'>"
            f"<table><tr><th>model</th><th>clean</th>{''.join(f'<th>{esc(c)}</th>' for c in names)}"
            f"<th>mean corruption Dice</th><th>mCE vs {esc(baseline or 'no baseline')}</th></tr>{rows}</table>"
            "<p>Cells: mean Dice over the severities run (area under the Dice-severity curve relative to the clean "
            "Dice, as ROOD-MRI reports it). mCE: ImageNet-C's mean corruption error relative to the baseline "
            "(1 = as robust as it, lower is better). Corruptions and their physical parameters: "
            "<code>rog.corruptions</code>; whole cases through the sliding window; "
            f"cases: {esc(entries[0][1].meta.cases_source_text)}.</p>"
            + _checks_table(entries))


def modalities(entries: list) -> str:
    """The section on missing or degraded modalities: (name, `Results`) pairs of the modality
    sweep (`rog.bench.modality`), each channel's mean Dice under each replacement."""
    if not entries:
        return ""
    rows = []
    for name, r in entries:
        s = r.summary
        for ch, by in s.dice.items():
            rows.append(f"<tr><td>{esc(name)}</td><td>{fmt(s.clean_dice)}</td><td>channel {esc(ch)}</td>" + "".join(
                f"<td>{esc(k)}: {fmt(v)} ({fmt(s.robust_accuracy[ch][k], 2)})</td>" for k, v in by.items()) + "</tr>")
    return ("<h2>Missing or degraded modality</h2><table><tr><th>model</th><th>clean</th><th>replaced</th>"
            f"<th colspan='9'>mean Dice with that channel replaced (robust accuracy at the model's own tau)</th></tr>"
            f"{''.join(rows)}</table><p>zero: the channel set to 0 in the model's input units; mean: to the case's "
            "channel mean; NAME:SEVERITY: that scanner artefact of <code>rog corrupt</code> on the channel alone, the "
            f"others as acquired. Whole cases; cases: {esc(entries[0][1].meta.cases_source_text)}.</p>"
            + _checks_table(entries))


def artefacts(entries: list, worst: dict, panels: bool, tau) -> str:
    """The section on worst-case artefacts: (name, `Results`) pairs of the artefact sweep, and
    per name the worst artefact's parameters at the highest severity ({artefact: (case, by,
    parameters)}); `panels`: the slices of the worst artefacts were drawn; `tau`: the report's
    `Tau`, of the robust accuracies."""
    if not entries:
        return ""
    rows = []
    for name, r in entries:
        s = r.summary
        for a, v in s.artefacts.items():
            cells = "".join(f"<td>{fmt(v.random[k])} / {fmt(v.random_worst[k])} / <b>{fmt(v.worst[k])}</b> "
                            f"({fmt(v.robust_accuracy[k], 2)})</td>" for k in v.levels())
            rows.append(f"<tr><td>{esc(name)}</td><td>{fmt(s.clean_dice)}</td><td>{esc(a)}</td>{cells}"
                        f"<td>{fmt(v.relative_auc, 2)}</td></tr>")
    levels = next(iter(entries[0][1].summary.artefacts.values())).levels()
    params = "".join(f"<tr><td>{esc(name)}</td><td>{esc(a)}</td><td>{esc(case)}</td><td>{esc(by)}</td>"
                     f"<td style='text-align:left'><code>{esc(json.dumps(p))}</code></td></tr>"
                     for name, per in worst.items() for a, (case, by, p) in per.items())
    return ("<h2>Worst-case scanner artefacts</h2><img src='artefacts.png' alt='random vs worst-case artefacts'>"
            "<table><tr><th>model</th><th>clean</th><th>artefact</th>"
            + "".join(f"<th>severity {k}</th>" for k in levels) + f"<th>worst-case rel. AUC</th></tr>{''.join(rows)}"
            "</table><p>Cells: mean Dice under a random draw / the worst of the random draws / <b>the worst case</b> "
            f"(search or draw, per case) (share of cases not broken, Dice >= the report's {esc(tau.text())}). "
            "The search: APGD on the artefact's "
            "parameters, its first run from the worst draw, inside the box of physical sizes <code>rog corrupt</code> "
            "uses at that severity (<code>rog.artefacts</code>); whole cases through the sliding window; "
            f"configuration <code>{esc(json.dumps(entries[0][1].config))}</code>. "
            "The worst artefact at the highest severity, per model and artefact:</p>"
            f"<table><tr><th>model</th><th>artefact</th><th>case</th><th>found by</th><th>parameters</th></tr>{params}"
            "</table>" + ("<img src='artefact_panels.png' alt='worst artefacts'>" if panels else "")
            + _checks_table(entries))


def certified(models: dict) -> str:
    """The section on certified robustness: per model (name -> its `Bracket` per noise level)
    and radius, the certified lower bound beside the attacked upper bound, the radii in the
    units a user reads, and the guarantee's limits."""
    if not models:
        return ""
    rows, units = [], []
    for name, per_sigma in models.items():
        for b in per_sigma:
            cells = "".join(f"<td><b>{fmt(p.certified)}</b> / {fmt(p.attacked)} ({p.certified_share:.0%})</td>"
                            for p in b.points)
            rows.append(f"<tr><td>{esc(name)}</td><td>{b.sigma:g}</td><td>{b.cases}</td><td>{fmt(b.clean_dice)}</td>"
                        f"<td>{fmt(b.smoothed_dice)}</td>{cells}</tr>")
            units.append(f"<tr><td>{esc(name)}</td><td>{b.sigma:g}</td>" + "".join(
                f"<td>{p.l2_eps:.4g}"
                + (f" ({', '.join(f'{v:.3g}' for v in p.rms)})" if p.rms else "") + "</td>" for p in b.points)
                + f"<td>{fmt(b.linf_l2, 2)}</td></tr>")
    first = next(iter(models.values()))[0]
    head = "".join(f"<th>r = {p.radius:g}</th>" for p in first.points)
    unattacked = any(p.attacked is None for bs in models.values() for b in bs for p in b.points)
    return ("<h2>Certified robustness (randomized smoothing) beside attacks</h2>"
            "<img src='certified.png' alt='certified vs attacked Dice over the L2 radius'>"
            "<table><tr><th>model</th><th>sigma</th><th>cases</th><th>base clean</th><th>smoothed</th>"
            f"{head}</tr>{''.join(rows)}</table>"
            "<p>Cells: <b>the certified Dice lower bound</b> of the smoothed model over every perturbation of L2 norm "
            "r / the worst Dice rog's attacks found on the base model in the same L2 ball (whole cases, "
            "<code>rog attack --scope volume --norm l2</code>; at r = 0 its clean Dice) (share of voxels certified). "
            "The true robust Dice of the smoothed model lies at or above the bound; the attacked figure is an upper "
            "bound for the base model, whose robustness the certificate does not cover."
            + (" n/a: not every case was attacked at that radius (<code>rog certify</code> prints the eps to give "
               "<code>rog attack</code>)." if unattacked else "") + "</p>"
            "<table><tr><th>model</th><th>sigma</th>"
            + head + f"<th>L2 norm of the 8/255 L-inf ball</th></tr>{''.join(units)}</table>"
            "<p>The radii in the units a user reads: r: the L2 norm of the perturbation on the range-normalised scale "
            "(each channel's intensity range is 1); then the same as <code>rog attack --norm l2 --eps</code> (the "
            "root mean square per voxel and channel, /255 of the range); in brackets that root mean square in the "
            "model input's intensity units, per channel. The last column is the L2 norm, on r's scale, of the "
            "L-inf ball of 8/255 that the attack sections use: the certifiable radii are far smaller.</p>"
            f"<p>Limits: each bound holds with probability 1 - alpha = {1 - first.alpha:g} per case and radius "
            "(Clopper-Pearson per voxel, with the multiple-testing correction over the voxels), for the smoothed "
            "model (the majority vote of the whole inference under Gaussian noise of sd sigma), not the base model. "
            "Abstained voxels count against every class (SegCertify's procedure, <code>rog.certify</code>).</p>")


def learning(learn) -> str:
    """What learning adds: the models' clean test Dice beside the atlas-transfer reference."""
    if not learn:
        return ""
    ref, best = learn.reference, learn.best_single
    single = ref.single
    best_row = (f"<tr><td>atlas transfer, best single training label ({esc(best)}; chosen on the test cases)</td>"
                f"<td>{fmt(single[best])}</td><td>-</td></tr>") if best else ""
    alone = (f"each training label alone scores {fmt(min(single.values()))}-{fmt(max(single.values()))} on the "
             "test cases its field of view covers. ") if single else ""
    rows = (f"<tr><td>atlas transfer (no learning)</td><td>{fmt(ref.dice)}</td><td>-</td></tr>" + best_row
            + "".join(f"<tr><td>{esc(g)}</td><td>{fmt(m.mean)} &plusmn; {fmt(m.sd)}</td><td>{m.n}</td></tr>"
                      for g, m in learn.models.items()))
    return ("<h2>What learning adds: clean test Dice beside an atlas-transfer reference</h2>"
            f"<table><tr><th>model</th><th>whole-case test Dice</th><th>seeds</th></tr>{rows}</table>"
            f"<p>Atlas transfer: the labels of the {ref.training_cases} training cases carried onto each test "
            f"case ({esc(', '.join(sorted(ref.cases)))}) through world coordinates, majority vote per voxel, no "
            f"model; {alone}Where cases share a space (brain templates registered to MNI space), this is what the "
            "space gives away: a model's clean Dice says what it learned only by how far it rises above these "
            "rows.</p>")


def finding(summary) -> str:
    """The finding up front, where no gain was asked for: which model is more robust and by how
    much, each in one sentence, with the tau every robust accuracy below uses."""
    found = summary.seeds.findings
    if not found:
        return ""
    return ("<h2>Finding</h2>" + "".join(f"<p><b>{esc(g.text)}</b></p>" for g in found)
            + f"<p>AUC: the area under the worst-case Dice over eps (0 = clean), normalised; every robust "
            f"accuracy of this report is at {esc(summary.tau.text())}.</p>")


def gain(seeds) -> str:
    """The defence's gain, in words, as a bold paragraph (empty without one)."""
    return f"<p><b>{esc(seeds.gain.text)}</b></p>" if seeds.gain else ""


def across_seeds(seeds) -> str:
    """The section on training seeds: mean +- sd table, figure, and the gain in words."""
    groups = seeds.groups
    eps_keys = sorted({k for g in groups.values() for k in g.eps}, key=float)

    def pm(stat):
        return "n/a" if stat is None else f"{stat.mean:.3f} &plusmn; {stat.sd:.3f}"
    rows = "".join(f"<tr><td>{esc(name)}</td><td>{len(g.seeds)}</td><td>{pm(g.clean_dice)}</td>"
                   + "".join(f"<td>{pm(g.eps.get(k))}</td>" for k in eps_keys)
                   + f"<td>{pm(g.auc_worst_case)}</td></tr>" for name, g in groups.items())
    return ("<h2>Across training seeds</h2>" + gain(seeds) + "<img src='seeds.png' alt='Dice vs eps over seeds'>"
            "<table><tr><th>model</th><th>seeds</th><th>clean</th>"
            + "".join(f"<th>eps {float(k):g}</th>" for k in eps_keys) + f"<th>AUC</th></tr>{rows}</table>"
            "<p>Cells: mean &plusmn; sample sd over training seeds of the worst-case mean Dice; the figure "
            "shows each seed's per-case worst-case Dice as points.</p>")


def volumes(listing: dict, viewer: str | None = None) -> str:
    """Links to the volumes `--save-volumes` wrote: {model: {case: [(file name, href)]}}, and to
    the 3D `viewer` page where one was written."""
    if not listing:
        return ""
    link = (f"<p><a href='{esc(viewer)}'>Open them in the 3D viewer</a> (NiiVue: the clean and the perturbed "
            "scan with their predictions and the perturbation, crosshairs linked).</p>" if viewer else "")
    rows = "".join(f"<tr><td>{esc(model)}</td><td>{esc(case)}</td><td style='text-align:left'>"
                   + " ".join(f"<a href='{esc(href)}'>{esc(name)}</a>" for name, href in files) + "</td></tr>"
                   for model, cases in listing.items() for case, files in cases.items())
    return ("<h2>Volumes that broke the models (NIfTI, in each scan's geometry)</h2><table><tr><th>model</th>"
            f"<th>case</th><th>files</th></tr>{rows}</table><p>clean: the scan as stored; TAG: the worst attack at "
            "that eps, or a corruption and severity, on the scan; TAG_delta: its difference from the clean scan in "
            "the scan's intensities; pred_TAG: the whole-case prediction on it. Where preprocessing resampled a case, "
            "TAG is the change resampled back (for viewing) and grid_clean, grid_TAG, grid_TAG_delta are the exact "
            "inputs on the model's own grid, in its input units. Open them over the scan in any NIfTI viewer.</p>"
            + link)


def worst_case_table(entries: list, summary) -> str:
    """Each model's worst-case Dice and robust accuracy per eps, and its AUC, columns keyed by
    eps (the report's `common_eps` where the runs' grids differ)."""
    parts = []
    unit = EPS_SHORT[summary.eps_unit]
    head = "".join(f"<th>eps {float(k):g}{unit}</th>" for k, _ in entries[0].summary.eps_items())
    parts.append(f"<table><tr><th>model</th><th>clean</th>{head}<th>AUC</th></tr>")
    for x in entries:
        cells = "".join(f"<td>{fmt(v.worst_case_dice)} ({fmt(v.robust_accuracy, 2)})</td>"
                        for _, v in x.summary.eps_items())
        parts.append(f"<tr><td>{esc(x.name)}</td><td>{fmt(x.summary.clean_dice)}</td>{cells}"
                     f"<td>{fmt(summary.models[x.name].auc_worst_case)}</td></tr>")
    parts.append("</table><p>Cells: worst-case mean Dice (robust accuracy: share of cases whose worst-case Dice "
                 f"stays at or above the {esc(summary.tau.text())}: one tau for every model, the task's success "
                 "threshold; each model's own tau is in its section below).</p>")
    if summary.common_eps:
        parts.append(f"<p><b>The runs were attacked at different eps: every figure and table compares them at the "
                     f"eps they all have ({', '.join(f'{float(k):g}' for k in summary.common_eps)}{EPS_SHORT[summary.eps_unit]}), each AUC "
                     "over that range.</b></p>")
    return "".join(parts)


def lesion_table(entries: list, summary) -> str:
    """Per model and eps, the lesions (connected components per class, `rog.evaluate.lesions`)
    missed and invented at the cases' worst cases, and the share of cases that lost none the
    clean prediction found; empty where no record counted them."""
    if not any(v.lesions_missed is not None for x in entries for _, v in x.summary.eps_items()):
        return ""
    unit = EPS_SHORT[summary.eps_unit]
    head = "".join(f"<th>eps {float(k):g}{unit}</th>" for k, _ in entries[0].summary.eps_items())
    rows = "".join(f"<tr><td>{esc(x.name)}</td>" + "".join(
        f"<td>{v.lesions_missed} / {v.lesions_invented} ({fmt(v.lesion_robust_accuracy, 2)})</td>"
        if v.lesions_missed is not None else "<td>n/a</td>" for _, v in x.summary.eps_items()) + "</tr>"
        for x in entries)
    return ("<h2>Lesions under attack</h2><table><tr><th>model</th>" + head + "</tr>" + rows + "</table><p>Cells: "
            "at each case's worst case, the reference lesions missed / the components invented, over cases and "
            "classes (connected components matched at IoU 0.1); in brackets, the share of cases where no attack made "
            "the model miss a lesion its clean prediction found. Mean Dice hides a vanished small structure beside a "
            "large one: this does not.</p>")


def render(entries: list, summary, class_names: list[str], t_eps: float, t_key: str, figs: list[str],
           tail: str = "") -> str:
    """The whole page: failed checks, seeds and learning, Dice under attack, PGD vs APGD-CE,
    per-attack table, qualitative panels, clean Dice per class, models, checks, threat and
    runtime, then `tail` (the corruption section)."""
    parts = [HEAD]
    failing = [(x.name, c) for x in entries for c in x.results.checks if c.status == "fail"]
    if failing:
        parts.append("<div class='fail'><h2>Validity checks FAILED</h2><ul>" + "".join(
            f"<li>{esc(m)}: {esc(c.name)}: {esc(c.detail)}</li>" for m, c in failing) +
            "</ul>These results may overestimate robustness.</div>")
    parts.append(finding(summary) + (across_seeds(summary.seeds) if "seeds.png" in figs else gain(summary.seeds))
                 + learning(summary.learning))
    parts.append("<h2>Dice under attack (worst case over the ensemble, per instance)</h2>"
                 "<img src='dice_vs_eps.png' alt='Dice vs eps'>")
    parts.append(worst_case_table(entries, summary) + lesion_table(entries, summary))
    if "pgd_vs_apgd.png" in figs:
        parts.append("<h2>PGD vs APGD-CE</h2><img src='pgd_vs_apgd.png' alt='PGD vs APGD-CE'>")
    attacks = sorted({a for x in entries for a in x.summary.eps[t_key].attacks})
    parts.append(f"<h2>Mean Dice under each attack at eps {t_eps:g}{EPS_SHORT[summary.eps_unit]}</h2><table><tr><th>model</th>"
                 + "".join(f"<th>{esc(a)}</th>" for a in attacks) + "<th>worst case</th></tr>")
    for x in entries:
        v = x.summary.eps[t_key]
        parts.append(f"<tr><td>{esc(x.name)}</td>" + "".join(
            f"<td>{fmt(v.attacks.get(a))}</td>" for a in attacks) + f"<td>{fmt(v.worst_case_dice)}</td></tr>")
    parts.append("</table>")
    if "qualitative.png" in figs:
        parts.append(f"<h2>Qualitative (the worst attack on case {esc(entries[0].cases[0])}, eps {t_eps:g}{EPS_SHORT[summary.eps_unit]})</h2>"
                     "<img src='qualitative.png' alt='qualitative'>")
    parts.append("<h2>Clean Dice per class (attacked cases)</h2><table><tr><th>model</th>"
                 + "".join(f"<th>{esc(c)}</th>" for c in class_names) + "</tr>")
    for x in entries:
        parts.append(f"<tr><td>{esc(x.name)}</td>" + "".join(f"<td>{fmt(d)}</td>" for d in x.clean_per_class())
                     + "</tr>")
    parts.append("</table><h2>Models</h2><table><tr><th>model</th><th>architecture</th><th>parameters</th>"
                 "<th>GFLOPs</th><th>input</th><th>test Dice per class</th></tr>")
    for x in entries:
        info, test = x.results.meta.model, x.results.meta.test_dice()
        if info:
            parts.append(f"<tr><td>{esc(x.name)}</td><td>{esc(info.model)}</td><td>{info.parameters:,}</td>"
                         f"<td>{info.gflops:.2f}</td><td>{'x'.join(map(str, info.input))}</td>"
                         f"<td>{esc(', '.join(fmt(d) for d in test)) if test else 'n/a'}</td></tr>")
    parts.append("</table><h2>Validity checks</h2><table><tr><th>model</th><th>check</th><th>status</th>"
                 "<th>detail</th></tr>")
    for x in entries:
        parts.append(_check_rows(x.name, sorted(x.results.checks, key=lambda c: c.status != "fail")))
    parts.append("</table><h2>Threat model, hyper-parameters, runtime</h2>")
    for x in entries:
        r = x.results
        parts.append(f"<h3>{esc(x.name)}</h3><p>perturbation on: {esc(r.perturbed)}<br>"
                     f"threat: <code>{esc(json.dumps(r.threat))}</code><br>"
                     f"configuration: <code>{esc(json.dumps(r.config))}</code>; cases {len(x.cases)} "
                     f"({esc(r.meta.cases_source_text)}); own tau {r.tau:.3f} (half its own mean clean Dice: its "
                     f"attacks' and results' threshold; the report's robust accuracies use {x.tau:.3f})</p>")
        if x.skipped():
            parts.append("<p>skipped: " + esc("; ".join(x.skipped())) + "</p>")
        parts.append("<table><tr><th>attack</th><th>total seconds</th></tr>" + "".join(
            f"<tr><td>{esc(a)}</td><td>{s:.1f}</td></tr>" for a, s in sorted(x.runtime().items())) + "</table>")
    parts.append(tail + "</body></html>")
    return "\n".join(parts)
