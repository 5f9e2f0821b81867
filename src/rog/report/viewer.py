"""The report's 3D viewer (viewer.html) of the volumes `--save-volumes` wrote: NiiVue, the
neuroimaging field's WebGL viewer, showing the clean scan with its prediction, the perturbed
scan with its prediction and the perturbation, crosshairs linked, the predictions' opacity on
a slider.

It works offline from the report folder, opened as a file: NiiVue's standalone build
(niivue.umd.js, from npm's @niivue/niivue, which `scripts/setup.sh` installs; never kept in
this repository) is copied beside the page, and each view's volumes are a script of base64
strings (viewer/VIEW.js) that the page loads when the view is chosen: a browser lets a page
opened from disk load scripts, not fetch files. A view whose volumes are missing says so on
the page. Where NiiVue is not installed the page says how to install it.
"""
from __future__ import annotations

import base64
import html
import json
import os
import shutil
from pathlib import Path

from rog.atomic import write_text

# where scripts/setup.sh installs NiiVue (`npm install --prefix`); ROG_NIIVUE names the bundle instead
NIIVUE_HOME = Path.home() / ".cache" / "rog" / "niivue"
BUNDLE = Path("node_modules") / "@niivue" / "niivue" / "dist" / "niivue.umd.js"
ROLES = ("clean", "pred_clean", "perturbed", "pred_perturbed", "delta")


def niivue_bundle() -> Path | None:
    """NiiVue's standalone build: $ROG_NIIVUE, else the one setup installed; None if neither."""
    given = os.environ.get("ROG_NIIVUE")
    path = Path(given) if given else NIIVUE_HOME / BUNDLE
    return path if path.is_file() else None


def views(listing: dict[str, dict[str, dict[str, Path]]]) -> list[dict]:
    """The viewer's views from {model (kind): {case: {volume name: file}}} (`ResultsDir.volumes`
    per results folder): one per model, case and perturbed input TAG (a TAG with its
    pred_TAG and TAG_delta; grid_* files are on the model's grid, not the scan's, and are left
    out), each {"id", "title", "files": {role: file or None}}."""
    out = []
    for model, cases in listing.items():
        for case, files in cases.items():
            tags = sorted((n for n in files if f"pred_{n}" in files and not n.startswith(("grid_", "pred_"))
                           and n != "clean"), key=_tag_order)
            for tag in tags:
                roles = dict(zip(ROLES, ("clean", "pred_clean", tag, f"pred_{tag}", f"{tag}_delta")))
                out.append({"id": f"v{len(out)}", "title": f"{model}: {case}, {tag}",
                            "files": {role: files.get(name) for role, name in roles.items()}})
    return out


def _tag_order(tag: str):
    """Attacks by eps (eps8.0 before eps16.0), then the rest by name."""
    try:
        return (0, float(tag[3:]), "") if tag.startswith("eps") else (1, 0.0, tag)
    except ValueError:
        return (1, 0.0, tag)


def write_viewer(out: Path, listing: dict) -> str | None:
    """Write OUT/viewer.html (with OUT/niivue.umd.js and OUT/viewer/*.js) for `listing` (as
    `views` takes it); returns the page's name, or None where nothing was saved."""
    shown = views(listing)
    if not shown:
        return None
    bundle = niivue_bundle()
    data = out / "viewer"
    data.mkdir(parents=True, exist_ok=True)
    for v in shown:
        # role -> [file name, base64 of the file]: NiiVue reads the format off the name
        volumes = {role: [f.name, base64.b64encode(f.read_bytes()).decode()]
                   for role, f in v["files"].items() if f is not None and f.is_file()}
        write_text(data / f"{v['id']}.js", f"window.ROG_VIEW = {json.dumps(volumes)};\n")
    if bundle is not None:
        shutil.copyfile(bundle, out / "niivue.umd.js")
    write_text(out / "viewer.html", _page([{"id": v["id"], "title": v["title"]} for v in shown], bundle is not None))
    return "viewer.html"


def _page(shown: list[dict], have_niivue: bool) -> str:
    options = "".join(f"<option value='{v['id']}'>{html.escape(v['title'])}</option>" for v in shown)
    missing = "" if have_niivue else (
        "<p class='msg'>NiiVue is not installed, so the volumes cannot be shown here: run "
        "<code>bash scripts/setup.sh</code> (it installs npm's @niivue/niivue into ~/.cache/rog/niivue) or set "
        "ROG_NIIVUE to its niivue.umd.js, then <code>rog report</code> again. The files are linked in the report.</p>")
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>rog viewer</title><style>
body{{font-family:sans-serif;margin:1em;background:#fafafa}} .panes{{display:flex;gap:8px}}
.pane{{flex:1;min-width:0}} .box{{height:460px}} canvas{{width:100%;height:100%;background:#000}} .msg{{color:#a00}}
</style></head><body><h1>What broke the model, in 3D</h1>
<p>View <select id='view'>{options}</select> prediction opacity
<input id='opacity' type='range' min='0' max='100' value='50'> (crosshairs linked: click a pane)</p>
{missing}<p id='status' class='msg'></p>
<div class='panes'><div class='pane'><b>clean scan + prediction</b><div class='box'><canvas id='c0'></canvas></div></div>
<div class='pane'><b>perturbed scan + prediction</b><div class='box'><canvas id='c1'></canvas></div></div>
<div class='pane'><b>perturbation (scan's units: grey 0, white up, black down)</b><div class='box'><canvas id='c2'></canvas>
</div></div></div>
<p>The perturbed scan is the worst attack at that eps (or the corruption) on the scan as stored; where
preprocessing resampled the case it is the change resampled back (the exact inputs on the model's grid
are the report's grid_* files).</p>
{"<script src='niivue.umd.js'></script>" if have_niivue else ""}
<script>{_SCRIPT}</script></body></html>"""


# the page's logic: load the chosen view's script, build the three panes, link them; every failure
# is said in #status and in the title ("loaded:N", "missing:ROLE,..." or "error:...")
_SCRIPT = """
const say = (text) => { document.getElementById('status').textContent = text; };
// the class colours of the report's legend (matplotlib's tab10), background transparent
const TAB10 = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
               [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]];
const LABELS = {R: [0], G: [0], B: [0], A: [0], labels: ['background']};
for (let k = 0; k < 255; k++) {
  const [r, g, b] = TAB10[k % 10];
  LABELS.R.push(r); LABELS.G.push(g); LABELS.B.push(b); LABELS.A.push(255); LABELS.labels.push('class ' + (k + 1));
}
let panes = null;
function makePanes() {
  if (panes || typeof niivue === 'undefined') return panes;
  // the three slice planes, no volume rendering: it is what a reader scrolls, and a software
  // WebGL (a headless browser's) renders three panes of it in seconds rather than a minute
  panes = [0, 1, 2].map(i => new niivue.Niivue({backColor: [0, 0, 0, 1], multiplanarShowRender: 0}));
  panes.forEach((nv, i) => nv.attachTo('c' + i));
  panes.forEach((nv, i) => nv.broadcastTo(panes.filter((_, j) => j !== i), {'2d': true, '3d': true}));
  return panes;
}
async function volume(v, role, opacity) {
  const [name, data] = v;
  const img = await niivue.NVImage.loadFromBase64({base64: data, name: name});
  img.opacity = opacity;
  if (role.startsWith('pred')) {  // a label map over the scan: background transparent, one colour per class
    img.setColormapLabel(LABELS);
  } else if (role === 'delta') {  // the change, symmetric: 0 mid grey, brighter where the scan went up
    const top = Math.max(Math.abs(img.global_min), Math.abs(img.global_max), 1e-12);
    img.colormap = 'gray'; img.cal_min = -top; img.cal_max = top;
  } else {
    img.colormap = 'gray';
  }
  return img;
}
async function show(id) {
  if (!makePanes()) { document.title = 'error:no niivue'; return; }
  delete window.ROG_VIEW;
  const file = 'viewer/' + id + '.js';
  const found = await new Promise(done => {
    const s = document.createElement('script');
    s.src = file; s.onload = () => done(true); s.onerror = () => done(false);
    document.body.appendChild(s);
  });
  const v = window.ROG_VIEW || {};
  const missing = ['clean', 'pred_clean', 'perturbed', 'pred_perturbed', 'delta'].filter(r => !v[r]);
  say(!found ? 'the volumes of this view are missing: ' + file + ' (moved, or the report copied without it)'
      : missing.length ? 'missing volume(s): ' + missing.join(', ') + ' (not saved)' : '');
  const alpha = document.getElementById('opacity').value / 100;
  const layers = [[['clean', 1], ['pred_clean', alpha]], [['perturbed', 1], ['pred_perturbed', alpha]], [['delta', 1]]];
  let loaded = 0;
  for (let i = 0; i < 3; i++) {
    const nv = panes[i];
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
    for (const [role, a] of layers[i]) {
      if (!v[role]) continue;
      nv.addVolume(await volume(v[role], role, a));
      loaded++;
    }
    nv.updateGLVolume();
  }
  document.title = missing.length ? 'missing:' + missing.join(',') : 'loaded:' + loaded;
}
document.getElementById('view').addEventListener('change', e => show(e.target.value).catch(err => {
  say('could not show the view: ' + err); document.title = 'error:' + err; }));
document.getElementById('opacity').addEventListener('input', e => {
  if (!panes) return;
  for (const nv of panes.slice(0, 2)) if (nv.volumes.length > 1) nv.setOpacity(1, e.target.value / 100);
});
const first = document.getElementById('view').value;
if (first) show(first).catch(err => { say('could not show the view: ' + err); document.title = 'error:' + err; });
"""
