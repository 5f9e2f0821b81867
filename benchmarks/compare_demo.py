"""Compare every recorded figure of two demo work directories, e.g. the demo run by the code
before a change and after it: `python benchmarks/compare_demo.py OLD_WORKDIR NEW_WORKDIR`.

Reads JSON only (results.json of either version, test_eval.json, atlas_transfer.json, the
report's summary.json): every record (all fields but the runtime), clean Dice, tau, summary
and check of each results folder, and every figure of the report. A key only one side has (a
newer writer's addition, such as test_eval.json's class names) is named, not compared. Prints each difference and
a last line saying whether all are identical."""
import json, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
bad = 0; n = 0
def strip(r): return {k: v for k, v in r.items() if k not in ("seconds",) and v is not None}
def common(a, b):
    """Whether the keys both documents have hold the same values (a newer writer may add keys)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return a == b
    added = set(a) ^ set(b)
    if added:
        print("  keys in one only (not compared):", sorted(added))
    return all(a[k] == b[k] for k in set(a) & set(b))
for fa in sorted(a.glob("attacks/*/results.json")):
    fb = b / fa.relative_to(a)
    da, db = json.loads(fa.read_text()), json.loads(fb.read_text())
    ra = [strip(r) for r in da["records"]]; rb = [strip(r) for r in db["records"]]
    same = (ra == rb and da["clean"] == db["clean"] and da["tau"] == db["tau"] and da["summary"] == db["summary"]
            and [(c["name"], c["status"], c["detail"]) for c in da["checks"]] == [(c["name"], c["status"], c["detail"]) for c in db["checks"]]
            and da["meta"]["model"] == db["meta"]["model"] and common(da["meta"]["test"], db["meta"]["test"]))
    n += len(ra)
    if not same:
        bad += 1
        print("DIFF", fa.parent.name, ra == rb, da["clean"] == db["clean"], da["summary"] == db["summary"])
for fa in sorted(a.glob("runs/*/test_eval.json")) + [a / "atlas_transfer.json"]:
    fb = b / fa.relative_to(a)
    if not common(json.loads(fa.read_text()), json.loads(fb.read_text())):
        bad += 1; print("DIFF", fa.relative_to(a))
sa, sb = json.loads((a / "report/summary.json").read_text()), json.loads((b / "report/summary.json").read_text())
for m, v in sa["models"].items():
    w = sb["models"][m]
    own = lambda s: s.get("own_tau", s.get("tau"))  # noqa: E731 (the model's own tau; "tau" before the report's one tau)
    if own(v) != own(w): bad += 1; print("DIFF report", m, "own tau")
    for k in ("clean_dice", "auc_worst_case", "auc_pgd_apgd", "checks", "parameters", "gflops"):
        if v[k] != w[k]: bad += 1; print("DIFF report", m, k)
    for e, ev in v["eps"].items():
        for k in ev:
            if ev[k] != w["eps"][e][k]: bad += 1; print("DIFF report", m, e, k)
ga, gb = sa["seeds"]["gain"], sb["seeds"]["gain"]
if ga != gb: bad += 1; print("DIFF gain", ga, gb)
for g, v in sa["seeds"]["groups"].items():
    if v != sb["seeds"]["groups"][g]: bad += 1; print("DIFF group", g)
for m, v in sa["corruptions"].items():
    w = sb["corruptions"][m]
    if (v["clean_dice"], v["mean_corruption_dice"], v["mce"]) != (w["clean_dice"], w["mean_corruption_dice"], w["mce"]): bad += 1; print("DIFF corr", m)
    for c, cv in v["corruptions"].items():
        if any(cv[k] != w["corruptions"][c][k] for k in cv): bad += 1; print("DIFF corr", m, c)
la, lb = sa["learning"], sb["learning"]
if la["models"] != lb["models"] or la["reference"]["dice"] != lb["reference"]["dice"]: bad += 1; print("DIFF learning")
print(f"{len(list(a.glob('attacks/*/results.json')))} results folders, {n} records, report figures compared: "
      + ("all identical" if not bad else f"{bad} differences"))
print("gain:", gb["text"])
