"""`rog report`: an HTML page, PNG figures and a JSON summary from benchmark results.

Each input is a results folder (`rog.rundir.ResultsDir`) or a run folder, in which case the
results folders of that run (`WORKDIR/attacks/RUN-*`) are used. The report only renders what
the benchmark recorded: its results, the model summary and class names in their metadata and
the qualitative arrays of the worst attack; it loads no model and runs no attack.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from rog.atomic import write_json, write_text
from rog.evaluate.corruption import corruption_errors
from rog.evaluate.seeds import across_seeds, auc_gain, mean_sd
from rog.report import figures
from rog.rundir import ResultsDir, RunDir


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


def _finished(folder: ResultsDir) -> dict:
    doc = folder.read()
    if "summary" not in doc:
        raise FileNotFoundError(f"{folder.results()}: the run has not finished (no summary)")
    return doc


def _corruption_entry(folder: ResultsDir, doc: dict) -> dict:
    meta = doc.get("meta", {})
    return {"name": meta.get("label", folder.path.name), "folder": str(folder), "summary": doc["summary"],
            "checks": doc.get("checks", []), "config": doc["config"], "meta": meta}


def _model_entry(folder: ResultsDir, doc: dict) -> dict:
    meta = doc.get("meta", {})
    s = doc["summary"]
    clean = doc["clean"]
    k = doc["num_classes"] - 1
    clean_pc = np.nanmean(np.array([c["dice_per_class"] for c in clean.values()], float), axis=0).tolist()
    eps_items = sorted(s["eps"].items(), key=lambda kv: float(kv[0]))
    curve_eps = [0.0] + [float(e) for e, _ in eps_items]
    entry = {
        "name": meta.get("label", folder.path.name), "folder": str(folder), "meta": meta, "config": doc["config"],
        "threat": doc["threat"], "tau": doc["tau"], "clean_dice": s["clean_dice"], "clean_dice_per_class": clean_pc,
        "eps": s["eps"], "auc_worst_case": s.get("auc_worst_case"), "checks": doc.get("checks", []),
        "curve_eps": curve_eps, "curve_mean": [s["clean_dice"]] + [v["worst_case_dice"] for _, v in eps_items],
        "curve_classes": [clean_pc] + [v["worst_case_dice_per_class"] for _, v in eps_items],
        "runtime": {}, "num_classes": k + 1, "cases": sorted(clean),
        "class_names": meta.get("class_names") or [f"class {c}" for c in range(1, k + 1)],
        "panels": folder.read_qualitative(),
        "group": meta.get("label", folder.path.name), "seed": meta.get("seed"),
        "case_worst": _case_worst(doc),
    }
    for r in doc["records"]:
        if not r.get("skipped"):
            entry["runtime"][r["attack_id"]] = entry["runtime"].get(r["attack_id"], 0.0) + r["seconds"]
    entry["skipped"] = sorted({r["skipped"] for r in doc["records"] if r.get("skipped")})
    return entry


def _case_worst(doc: dict) -> dict[str, dict[str, float]]:
    """Per case: clean Dice (eps "0.0") and the worst Dice over attacks at each eps."""
    out = {case: {"0.0": c["dice"]} for case, c in doc["clean"].items()}
    for r in doc["records"]:
        if not r.get("skipped"):
            key = str(float(r["eps"]))
            out[r["case"]][key] = min(out[r["case"]].get(key, np.inf), r["dice"])
    return out


def _unique_names(entries: list[dict]) -> None:
    """Entries sharing a label are told apart by their training seed, else by their folder."""
    names = [e["name"] for e in entries]
    if len(set(names)) == len(names):
        return
    for e in entries:
        if names.count(e["name"]) > 1 and e["seed"] is not None:
            e["name"] = f"{e['name']}@s{e['seed']}"
    if len({e["name"] for e in entries}) != len(entries):
        for e in entries:
            e["name"] = Path(e["folder"]).name


def _seed_groups(entries: list[dict]) -> dict[str, dict]:
    """`across_seeds` of each label's entries (one per training seed)."""
    by_group: dict[str, dict] = {}
    for i, e in enumerate(entries):
        seed = e["seed"] if e["seed"] is not None else i
        by_group.setdefault(e["group"], {})[seed] = {
            "clean_dice": e["clean_dice"], "auc_worst_case": e["auc_worst_case"],
            "eps": {k: v["worst_case_dice"] for k, v in e["eps"].items()}, "cases": e["case_worst"]}
    return {g: across_seeds(runs) for g, runs in by_group.items()}


def _attack_curve(entry: dict, attack: str):
    eps, dice = [0.0], [entry["clean_dice"]]
    for e, v in sorted(entry["eps"].items(), key=lambda kv: float(kv[0])):
        ids = sorted((a for a in v["attacks"] if a.split("@")[0] == attack), key=lambda a: int(a.split("@")[1]))
        if ids:
            eps.append(float(e))
            dice.append(v["attacks"][ids[0]])
    return (eps, dice) if len(eps) > 1 else None


def _model_table(entry: dict) -> dict | None:
    """The model summary the benchmark recorded, with the run's test scores where known."""
    row = entry["meta"].get("model")
    return {**row, "test": entry["meta"].get("test")} if row else None


def _panel(entry: dict, eps_key: str) -> dict | None:
    arrays = entry["panels"].get(eps_key)
    return {"model": entry["name"], "case": entry["cases"][0], **arrays} if arrays else None


def _fmt(v, digits=3):
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def build_report(inputs: list[str | Path], out: str | Path, table_eps: float = 8.0, panels: bool = True,
                 baseline: str | None = None, gain: tuple[str, str] | None = None,
                 reference: dict | None = None) -> dict:
    """Write OUT/report.html, OUT/*.png and OUT/summary.json; returns the summary. Attack
    results give the paper's figures; results of one model label from several training seeds
    are also aggregated (mean +- sd over seeds, per-case points), and `gain` = (defended,
    reference) labels states the first's AUC gain over the second with a paired bootstrap
    interval over seeds and cases (`rog.evaluate.seeds.auc_gain`). Corruption results get a
    section of their own, with corruption errors relative to the model labelled `baseline`
    where given. `reference` (`rog.evaluate.atlas`)
    puts the atlas-transfer test Dice beside each model's whole-case test Dice."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    docs = [(f, _finished(f)) for f in _find_results(inputs)]
    corruption = [_corruption_entry(f, d) for f, d in docs if d.get("kind") == "corruption"]
    entries = [_model_entry(f, d) for f, d in docs if d.get("kind", "attack") == "attack"]
    corruption_summary, corruption_html = _corruptions(corruption, out, baseline)
    if not entries:
        summary = {"models": {}, "seeds": {"groups": {}, "gain": None}, "corruptions": corruption_summary,
                   "figures": ["dice_vs_severity.png"]}
        write_json(out / "summary.json", summary)
        write_text(out / "report.html", _HEAD + corruption_html + "</body></html>")
        return summary
    _unique_names(entries)
    groups = _seed_groups(entries)
    seeds = {"groups": groups, "gain": auc_gain(groups, *gain) if gain else None}
    class_names = entries[0]["class_names"]
    models = {e["name"]: e for e in entries}
    aucs = figures.dice_vs_eps(out / "dice_vs_eps.png", models, class_names)
    curves = {e["name"]: {a: c for a in ("pgd", "apgd-ce") if (c := _attack_curve(e, a))} for e in entries}
    pgd_aucs = figures.pgd_vs_apgd(out / "pgd_vs_apgd.png", curves) if any(curves.values()) else {}
    eps_keys = {float(k): k for k in entries[0]["eps"]}
    t_eps = table_eps if table_eps in eps_keys else max(eps_keys)
    tables = {e["name"]: _model_table(e) for e in entries}
    figs = ["dice_vs_eps.png"] + (["pgd_vs_apgd.png"] if pgd_aucs else [])
    if any(len(g["seeds"]) > 1 for g in groups.values()):
        figures.across_seeds(out / "seeds.png", groups)
        figs.append("seeds.png")
    if panels:  # one seed's models: the panels compare models, not training runs
        first = {g: min(e["seed"] or 0 for e in entries if e["group"] == g) for g in groups}
        rows = [p for e in entries if (e["seed"] or 0) == first[e["group"]] and (p := _panel(e, eps_keys[t_eps]))]
        if rows:
            figures.qualitative(out / "qualitative.png", rows, entries[0]["num_classes"])
            figs.append("qualitative.png")
    summary = {"table_eps": t_eps, "models": {
        e["name"]: {"clean_dice": e["clean_dice"], "clean_dice_per_class": e["clean_dice_per_class"],
                    "auc_worst_case": aucs[e["name"]], "auc_pgd_apgd": pgd_aucs.get(e["name"]),
                    "eps": {k: {kk: v[kk] for kk in ("worst_case_dice", "robust_accuracy", "attacks")}
                            for k, v in e["eps"].items()},
                    "tau": e["tau"], "checks": {c["name"]: c["status"] for c in e["checks"]},
                    "parameters": (tables[e["name"]] or {}).get("parameters"),
                    "gflops": (tables[e["name"]] or {}).get("gflops"),
                    "test": (tables[e["name"]] or {}).get("test")} for e in entries},
        "seeds": seeds, "learning": _learning(entries, reference),
        "figures": figs + (["dice_vs_severity.png"] if corruption else []), "corruptions": corruption_summary}
    write_json(out / "summary.json", summary)
    page = _html(entries, summary, class_names, tables, t_eps, eps_keys[t_eps], figs)
    first = _seeds_html(seeds) if "seeds.png" in figs else _gain_html(seeds)
    first += _learning_html(summary["learning"])
    page = page.replace("<h2>Dice under attack", first + "<h2>Dice under attack", 1)
    write_text(out / "report.html", page.replace("</body></html>", corruption_html + "</body></html>"))
    return summary


def _corruptions(entries: list[dict], out: Path, baseline: str | None) -> tuple[dict, str]:
    """Summary and HTML section of the corruption results (empty when there are none)."""
    if not entries:
        return {}, ""
    figures.dice_vs_severity(out / "dice_vs_severity.png", {e["name"]: e["summary"] for e in entries})
    base = next((e["summary"] for e in entries if e["name"] == baseline), None)
    names = list(entries[0]["summary"]["corruptions"])
    summary = {e["name"]: {"clean_dice": e["summary"]["clean_dice"],
                           "mean_corruption_dice": e["summary"]["mean_corruption_dice"],
                           "corruptions": {c: {k: v[k] for k in ("mean_dice", "relative_auc")}
                                           for c, v in e["summary"]["corruptions"].items()},
                           "mce": corruption_errors(e["summary"], base)["mce"] if base else None}
               for e in entries}
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(n)}</td><td>{_fmt(m['clean_dice'])}</td>" + "".join(
            f"<td>{_fmt(m['corruptions'].get(c, {}).get('mean_dice'))} "
            f"({_fmt(m['corruptions'].get(c, {}).get('relative_auc'), 2)})</td>" for c in names)
        + f"<td>{_fmt(m['mean_corruption_dice'])}</td><td>{_fmt(m['mce'], 2)}</td></tr>" for n, m in summary.items())
    checks = "".join(f"<tr class='{c['status']}'><td>{esc(e['name'])}</td><td>{esc(c['name'])}</td>"
                     f"<td>{c['status']}</td><td style='text-align:left'>{esc(c['detail'])}</td></tr>"
                     for e in entries for c in e["checks"])
    section = (
        "<h2>Scanner artefacts (corruptions)</h2><img src='dice_vs_severity.png' alt='Dice vs severity'>"
        f"<table><tr><th>model</th><th>clean</th>{''.join(f'<th>{esc(c)}</th>' for c in names)}"
        f"<th>mean corruption Dice</th><th>mCE vs {esc(baseline or 'no baseline')}</th></tr>{rows}</table>"
        "<p>Cells: mean Dice over the severities run (area under the Dice-severity curve relative to the clean "
        "Dice, as ROOD-MRI reports it). mCE: ImageNet-C's mean corruption error relative to the baseline "
        "(1 = as robust as it, lower is better). Corruptions and their physical parameters: "
        "<code>rog.corruptions</code>; whole cases through the sliding window; "
        f"cases: {esc(entries[0]['meta'].get('cases_source_text', 'not recorded'))}.</p>"
        f"<table><tr><th>model</th><th>check</th><th>status</th><th>detail</th></tr>{checks}</table>")
    return summary, section


def _learning(entries: list[dict], reference: dict | None) -> dict | None:
    """Whole-case test Dice (mean over classes) of each model label, mean +- sd over its seeds,
    beside the atlas-transfer reference; None without a reference."""
    if not reference or reference.get("dice") is None:
        return None
    tests: dict[str, list[float]] = {}
    for e in entries:
        test = e["meta"].get("test")
        if test:
            tests.setdefault(e["group"], []).append(float(np.nanmean(np.array(test["mean"]["dice"], float))))
    single = reference.get("single") or {}
    best = max(single, key=single.get) if single else None
    return {"reference": {"dice": reference["dice"], "dice_per_class": reference["dice_per_class"],
                          "training_cases": reference["training_cases"], "cases": sorted(reference["cases"]),
                          "single": single, "best_single": best},
            "models": {g: mean_sd(v) for g, v in tests.items()}}


def _learning_html(learning: dict | None) -> str:
    """What learning adds: the models' clean test Dice beside the atlas-transfer reference."""
    if not learning:
        return ""
    e = html.escape
    ref = learning["reference"]
    best, single = ref.get("best_single"), ref.get("single")
    best_row = (f"<tr><td>atlas transfer, best single training label ({e(best)}; chosen on the test cases)</td>"
                f"<td>{_fmt(single[best])}</td><td>-</td></tr>") if best else ""
    alone = (f"each training label alone scores {_fmt(min(single.values()))}-{_fmt(max(single.values()))} on the "
             "test cases its field of view covers. ") if single else ""
    rows = (f"<tr><td>atlas transfer (no learning)</td><td>{_fmt(ref['dice'])}</td><td>-</td></tr>" + best_row
            + "".join(f"<tr><td>{e(g)}</td><td>{_fmt(m['mean'])} &plusmn; {_fmt(m['sd'])}</td><td>{m['n']}</td></tr>"
                      for g, m in learning["models"].items()))
    return ("<h2>What learning adds: clean test Dice beside an atlas-transfer reference</h2>"
            f"<table><tr><th>model</th><th>whole-case test Dice</th><th>seeds</th></tr>{rows}</table>"
            f"<p>Atlas transfer: the labels of the {ref['training_cases']} training cases carried onto each test "
            f"case ({e(', '.join(ref['cases']))}) through world coordinates, majority vote per voxel, no model; "
            f"{alone}Where cases share a space (brain templates registered to MNI space), this is what the space gives "
            "away: a model's clean Dice says what it learned only by how far it rises above these rows.</p>")


def _gain_html(seeds: dict) -> str:
    """The defence's gain, in words, as a bold paragraph (empty without one)."""
    return f"<p><b>{html.escape(seeds['gain']['text'])}</b></p>" if seeds.get("gain") else ""


def _seeds_html(seeds: dict) -> str:
    """The section on training seeds: mean +- sd table, figure, and the gain in words."""
    e = html.escape
    groups = seeds["groups"]
    eps_keys = sorted({k for g in groups.values() for k in g["eps"]}, key=float)

    def pm(stat):
        return "n/a" if stat is None else f"{stat['mean']:.3f} &plusmn; {stat['sd']:.3f}"
    rows = "".join(f"<tr><td>{e(name)}</td><td>{len(g['seeds'])}</td><td>{pm(g['clean_dice'])}</td>"
                   + "".join(f"<td>{pm(g['eps'].get(k))}</td>" for k in eps_keys)
                   + f"<td>{pm(g['auc_worst_case'])}</td></tr>" for name, g in groups.items())
    return ("<h2>Across training seeds</h2>" + _gain_html(seeds) + "<img src='seeds.png' alt='Dice vs eps over seeds'>"
            "<table><tr><th>model</th><th>seeds</th><th>clean</th>"
            + "".join(f"<th>eps {float(k):g}</th>" for k in eps_keys) + f"<th>AUC</th></tr>{rows}</table>"
            "<p>Cells: mean &plusmn; sample sd over training seeds of the worst-case mean Dice; the figure "
            "shows each seed's per-case worst-case Dice as points.</p>")


_HEAD = ("<!doctype html><html><head><meta charset='utf-8'><title>rog robustness report</title><style>"
         "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "th{background:#f2f2f2}.fail{background:#fdd;font-weight:bold}.warn{background:#ffe9b3}"
         ".pass{background:#e3f7e3}img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}"
         "</style></head><body><h1>Robustness report</h1>")


def _html(entries, summary, class_names, tables, t_eps, t_key, figs) -> str:
    e = html.escape
    parts = [_HEAD]
    failing = [(x["name"], c) for x in entries for c in x["checks"] if c["status"] == "fail"]
    if failing:
        parts.append("<div class='fail'><h2>Validity checks FAILED</h2><ul>" + "".join(
            f"<li>{e(m)}: {e(c['name'])}: {e(c['detail'])}</li>" for m, c in failing) +
            "</ul>These results may overestimate robustness.</div>")
    parts.append("<h2>Dice under attack (worst case over the ensemble, per instance)</h2>"
                 "<img src='dice_vs_eps.png' alt='Dice vs eps'>")
    head = "".join(f"<th>eps {float(k):g}</th>" for k in sorted(entries[0]["eps"], key=float))
    parts.append(f"<table><tr><th>model</th><th>clean</th>{head}<th>AUC</th></tr>")
    for x in entries:
        m = summary["models"][x["name"]]
        cells = "".join(f"<td>{_fmt(v['worst_case_dice'])} ({_fmt(v['robust_accuracy'], 2)})</td>"
                        for _, v in sorted(x["eps"].items(), key=lambda kv: float(kv[0])))
        parts.append(f"<tr><td>{e(x['name'])}</td><td>{_fmt(x['clean_dice'])}</td>{cells}"
                     f"<td>{_fmt(m['auc_worst_case'])}</td></tr>")
    parts.append("</table><p>Cells: worst-case mean Dice (robust accuracy: share of cases whose Dice stays "
                 "above tau = half the mean clean Dice).</p>")
    if "pgd_vs_apgd.png" in figs:
        parts.append("<h2>PGD vs APGD-CE</h2><img src='pgd_vs_apgd.png' alt='PGD vs APGD-CE'>")
    attacks = sorted({a for x in entries for a in x["eps"][t_key]["attacks"]})
    parts.append(f"<h2>Mean Dice under each attack at eps {t_eps:g}/255</h2><table><tr><th>model</th>"
                 + "".join(f"<th>{e(a)}</th>" for a in attacks) + "<th>worst case</th></tr>")
    for x in entries:
        v = x["eps"][t_key]
        parts.append(f"<tr><td>{e(x['name'])}</td>" + "".join(
            f"<td>{_fmt(v['attacks'].get(a))}</td>" for a in attacks) + f"<td>{_fmt(v['worst_case_dice'])}</td></tr>")
    parts.append("</table>")
    if "qualitative.png" in figs:
        parts.append(f"<h2>Qualitative (the worst attack on case {e(entries[0]['cases'][0])}, eps {t_eps:g}/255)</h2>"
                     "<img src='qualitative.png' alt='qualitative'>")
    parts.append("<h2>Clean Dice per class (attacked cases)</h2><table><tr><th>model</th>"
                 + "".join(f"<th>{e(c)}</th>" for c in class_names) + "</tr>")
    for x in entries:
        parts.append(f"<tr><td>{e(x['name'])}</td>" + "".join(f"<td>{_fmt(d)}</td>" for d in x["clean_dice_per_class"]) + "</tr>")
    parts.append("</table><h2>Models</h2><table><tr><th>model</th><th>architecture</th><th>parameters</th>"
                 "<th>GFLOPs</th><th>input</th><th>test Dice per class</th></tr>")
    for x in entries:
        t = tables[x["name"]]
        if t:
            test = t["test"]["mean"]["dice"] if t.get("test") else None
            parts.append(f"<tr><td>{e(x['name'])}</td><td>{e(t['model'])}</td><td>{t['parameters']:,}</td>"
                         f"<td>{t['gflops']:.2f}</td><td>{'x'.join(map(str, t['input']))}</td>"
                         f"<td>{e(', '.join(_fmt(d) for d in test)) if test else 'n/a'}</td></tr>")
    parts.append("</table><h2>Validity checks</h2><table><tr><th>model</th><th>check</th><th>status</th><th>detail</th></tr>")
    for x in entries:
        for c in sorted(x["checks"], key=lambda c: c["status"] != "fail"):
            parts.append(f"<tr class='{c['status']}'><td>{e(x['name'])}</td><td>{e(c['name'])}</td>"
                         f"<td>{c['status']}</td><td style='text-align:left'>{e(c['detail'])}</td></tr>")
    parts.append("</table><h2>Threat model, hyper-parameters, runtime</h2>")
    for x in entries:
        cfg = x["config"]
        parts.append(f"<h3>{e(x['name'])}</h3><p>threat: <code>{e(json.dumps(x['threat']))}</code><br>"
                     f"attacks: <code>{e(', '.join(cfg['attacks']))}</code>; iterations {cfg['iters']}; "
                     f"Square queries {cfg['queries']}; scope {e(cfg['scope'])}; seed {cfg['seed']}; "
                     f"eps {cfg['eps']} /255; cases {len(x['cases'])} "
                     f"({e(x['meta'].get('cases_source_text', 'source not recorded'))}); tau {x['tau']:.3f}</p>")
        if x["skipped"]:
            parts.append("<p>skipped: " + e("; ".join(x["skipped"])) + "</p>")
        parts.append("<table><tr><th>attack</th><th>total seconds</th></tr>" + "".join(
            f"<tr><td>{e(a)}</td><td>{s:.1f}</td></tr>" for a, s in sorted(x["runtime"].items())) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
