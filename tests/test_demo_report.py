"""`rog demo --task synthetic --quick` (two seeds) end to end, its report, and a headless browser view of it."""
import json
import re
import shutil
import subprocess

import pytest

from rog.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--task", "synthetic", "--quick", "-w", str(work)]) == 0
    return work


def test_demo_quick_produces_a_complete_report(demo):
    report = demo / "report"
    html = (report / "report.html").read_text()
    summary = json.loads((report / "summary.json").read_text())
    for fig in summary["figures"]:
        data = (report / fig).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    for src in re.findall(r"src='([^']+)'", html):
        assert (report / src).is_file(), src
    # the demo attacks label-centred patches: the report says so, and why
    assert "perturbation on: a label-centred patch of each case on rog&#x27;s preprocessed grid" in html
    models = {"rog_clean", "rog_free", "dynunet"}
    assert set(summary["models"]) == {f"{m}@s{s}" for m in models for s in (0, 1)}
    # two training seeds per model, aggregated, and the gain stated from the numbers
    groups = summary["seeds"]["groups"]
    assert set(groups) == models and all(g["seeds"] == [0, 1] for g in groups.values())
    for name, g in groups.items():
        runs = [summary["models"][f"{name}@s{s}"] for s in (0, 1)]
        assert g["auc_worst_case"]["values"] == [r["auc_worst_case"] for r in runs]
        assert g["eps"]["8.0"]["mean"] == pytest.approx(sum(r["eps"]["8.0"]["worst_case_dice"] for r in runs) / 2)
    gain = summary["seeds"]["gain"]
    assert gain["seeds"] == 2 and gain["text"] in html.replace("&#x27;", "'")
    assert gain["holds"] == (gain["interval"][0] > 0) and gain["interval"][0] <= gain["gain"] <= gain["interval"][1]
    assert gain["cases"] >= 1 and "interval" in gain["text"]
    assert "seeds.png" in summary["figures"] and "Across training seeds" in html
    # the atlas-transfer reference beside the models' whole-case test Dice
    learning = summary["learning"]
    reference = json.loads((demo / "atlas_transfer.json").read_text())
    assert learning["reference"]["dice"] == reference["dice"] and 0 <= reference["dice"] <= 1
    assert set(learning["models"]) == models and all(m["n"] == 2 for m in learning["models"].values())
    assert "atlas transfer (no learning)" in html
    # the phantoms share no space: no training label's field of view covers a test case
    assert ("best single training label" in html) == bool(reference["single"])
    assert learning["best_single"] == (max(reference["single"], key=reference["single"].get)
                                       if reference["single"] else None)
    for m in summary["models"].values():
        assert 0 <= m["clean_dice"] <= 1
        assert set(m["eps"]) == {"8.0", "16.0"}
        assert all(0 <= v["worst_case_dice"] <= 1 for v in m["eps"].values())
        assert m["parameters"] > 0 and m["test"] is not None
    assert "Validity checks" in html and "apgd-ce" in html
    # the short corruption sweep: every model, the quick corruptions, mCE against DynUNet
    assert "dice_vs_severity.png" in summary["figures"] and "Scanner artefacts" in html
    corr = summary["corruptions"]
    assert set(corr) == models and corr["dynunet"]["mce"] == pytest.approx(1.0)  # the first seed's models
    for m in corr.values():
        assert set(m["corruptions"]) == {"noise", "blur", "motion", "anisotropy"}
        assert all(0 <= c["mean_dice"] <= 1 for c in m["corruptions"].values())


def test_demo_resumes_by_skipping_finished_stages(demo, capsys):
    assert main(["demo", "--task", "synthetic", "--quick", "-w", str(demo)]) == 0
    out = capsys.readouterr().out
    assert out.count("trained already") == 6 and out.count("attack results exist") == 6
    assert out.count("corruption results exist") == 3


def test_a_demo_whose_recipe_changed_refuses_the_old_runs_and_keeps_them(demo, monkeypatch, capsys):
    from dataclasses import replace

    import rog.demo
    quick = rog.demo.DEMOS[("synthetic", True)]
    monkeypatch.setitem(rog.demo.DEMOS, ("synthetic", True), replace(quick, defence=replace(quick.defence, lr=5e-4)))
    config = demo / "runs" / "rog_free-s0" / "config.json"
    before = config.read_bytes()
    capsys.readouterr()
    assert main(["demo", "--task", "synthetic", "--quick", "-w", str(demo)]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "rog_free-s0/config.json: trained with other settings (lr" in last and "another work directory" in last
    assert config.read_bytes() == before


def test_free_at_run_really_perturbed_its_inputs(demo):
    rows = (demo / "runs" / "rog_free-s0" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    ratio = [float(r.split(",")[header.index("adv_ratio")]) for r in rows[1:]]
    assert ratio and all(r > 0.5 for r in ratio)


def test_report_opens_in_a_headless_browser(demo, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (the test setup installs it where apt-get is available)")
    shot = tmp_path / "shot.png"
    page = (demo / "report" / "report.html").resolve()
    # the page reports whether every image decoded; chromium prints the DOM to stdout
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
      window.addEventListener('load', () => {
        const imgs = [...document.images];
        const bad = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
        document.title = 'images:' + imgs.length + ' broken:' + bad;
      });</script></body>"""))
    for f in (demo / "report").glob("*.png"):
        shutil.copy(f, tmp_path / f.name)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert title and re.fullmatch(r"images:\d+ broken:0", title.group(1)), dom.stdout[:300]
    assert int(title.group(1).split()[0].split(":")[1]) >= 2
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes().startswith(PNG)


def test_apgd_at_least_as_strong_as_pgd_and_dice_falls_with_eps(demo):
    summary = json.loads((demo / "report" / "summary.json").read_text())
    m = summary["models"]["rog_clean@s0"]
    for eps in ("8.0", "16.0"):
        attacks = m["eps"][eps]["attacks"]
        assert attacks["apgd-ce@5"] <= attacks["pgd@5"] + 0.05, attacks
    assert m["eps"]["16.0"]["worst_case_dice"] <= m["eps"]["8.0"]["worst_case_dice"] + 1e-9
    assert m["eps"]["16.0"]["worst_case_dice"] < m["clean_dice"]
