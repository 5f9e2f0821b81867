"""The report's 3D viewer (NiiVue) of the saved volumes, opened from disk in headless Chromium."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from rog.cli import main
from rog.report.viewer import niivue_bundle, views

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # WebGL 2 on the CPU: Chromium's software renderer
         "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]


@pytest.fixture(scope="module")
def report(prepared, tmp_path_factory):
    """A report of one attack run with --save-volumes (one case)."""
    wd, plan = prepared
    root = tmp_path_factory.mktemp("viewer")
    plan.save(root / "plan.json")
    out = root / "att"
    assert main(["attack", "--model", "rog", "--plan", str(root / "plan.json"), "--data", str(wd.preprocessed),
                 "--device", "cpu", "--eps", "8", "--attacks", "pgd", "--iterations", "1", "--max-cases", "1",
                 "--save-volumes", "-o", str(out)]) in (0, 1)  # an untrained model may fail a check
    assert main(["report", str(out), "-o", str(root / "rep")]) == 0
    return root / "rep"


def _browser():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (the test setup installs it where apt-get is available)")
    if niivue_bundle() is None:
        pytest.skip("NiiVue is not installed (scripts/setup.sh installs it with npm)")
    return browser


def _title(browser, page, profile) -> str:
    dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert found, dom.stdout[:300]
    return found.group(1), dom.stdout


def test_the_views_pair_each_perturbed_scan_with_its_prediction_and_change(tmp_path):
    files = {n: tmp_path / f"{n}.nii.gz" for n in ("clean", "pred_clean", "eps16.0", "pred_eps16.0", "eps16.0_delta",
                                                   "eps8.0", "pred_eps8.0", "grid_eps8.0", "grid_clean")}
    shown = views({"rog (attack)": {"c0": files}})
    assert [v["title"] for v in shown] == ["rog (attack): c0, eps8.0", "rog (attack): c0, eps16.0"]  # eps order
    assert shown[1]["files"]["delta"] == files["eps16.0_delta"] and shown[0]["files"]["delta"] is None
    assert shown[0]["files"]["perturbed"] == files["eps8.0"]  # the scan's, not the model grid's grid_eps8.0


def test_the_viewer_draws_the_saved_volumes_and_says_what_is_missing(report, tmp_path):
    browser = _browser()
    html = (report / "report.html").read_text()
    assert "href='viewer.html'" in html and (report / "niivue.umd.js").is_file()
    page = report / "viewer.html"
    title, _ = _title(browser, page, tmp_path / "p1")
    assert title == "loaded:5", title  # clean + prediction, perturbed + prediction, the change
    shot = tmp_path / "viewer.png"
    subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'p2'}", "--virtual-time-budget=5000",
                    f"--screenshot={shot}", "--window-size=1500,700", page.as_uri()], capture_output=True, timeout=180)
    from PIL import Image
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # each of the three panes drew its volume: many pixels neither black (the canvas) nor the page
    band = pixels[200:600]
    drawn = (band.sum(-1) > 30) & (np.abs(band - 250).sum(-1) > 15)
    thirds = np.array_split(drawn, 3, axis=1)
    assert all(t.mean() > 0.05 for t in thirds), [round(float(t.mean()), 3) for t in thirds]
    # a view whose volumes are gone is a message on the page, not a broken one
    (report / "viewer" / "v0.js").unlink()
    title, dom = _title(browser, page, tmp_path / "p3")
    assert title.startswith("missing:clean"), title
    assert "the volumes of this view are missing: viewer/v0.js" in dom
