"""The API reference (docs/api.md), made from the docstrings of the public API: each listed
name's signature and docstring, in the order a user meets them. `python -m rog.apidoc` writes
it; a test keeps the committed file current and runs the examples (`>>>`) of these modules."""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

# module -> public names, in reading order
API = {
    "rog.attacks": ["ThreatModel", "Attack", "APGD", "FAB", "Square", "PGD", "SegPGD", "CosPGD"],
    "rog.bench": ["Ensemble", "Benchmark", "BenchmarkConfig", "CorruptionSweep", "CorruptionConfig", "ArtefactSweep",
                  "ArtefactConfig", "CertifySweep", "CertifyConfig", "BenchCase"],
    "rog.results": ["Results", "AttackRecord", "CorruptionRecord", "ArtefactRecord", "CertifyRecord", "AttackSummary",
                    "EpsSummary", "CorruptionSummary", "ArtefactSummary", "CertifySummary", "Meta", "Check"],
    "rog.certify.smoothing": ["vote_counts", "certify", "certified_dice", "holm"],
    "rog.infer.sliding_window": ["SlidingWindow", "sliding_window"],
    "rog.infer.predictor": ["predict_case", "predict_cases"],
    "rog.corruptions": ["corrupt"],
    "rog.artefacts": ["make_artefact", "worst_artefact", "Outcome"],
    "rog.evaluate.metrics": ["dice_per_class", "dice_batch", "case_metrics", "Regions"],
    "rog.models.registry": ["build_model"],
    "rog.plan": ["Plan", "make_plan"],
    "rog.pipeline.sweeps": ["SweepRequest", "SweepResult", "run_sweep"],
    "rog.pipeline.predict": ["PredictRequest", "PredictResult", "predict"],
    "rog.pipeline.sources": ["source_from", "RunSource", "FactorySource", "RawSource", "RunScansSource",
                             "NnunetSource", "BundleSource"],
    "rog.pipeline.models": ["BenchModel"],
    "rog.pipeline.experiment": ["Settings", "run_experiment"],
    "rog.report.build": ["build_report"],
}


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):  # some builtins have none
        return "(...)"


def reference() -> str:
    """docs/api.md's text."""
    out = ["# API reference", "",
           "Made from the docstrings by `python -m rog.apidoc` (a test keeps it current and runs its examples).",
           "Shapes: x `[B, C, D, H, W]` (channels first, MONAI's convention), labels `[B, D, H, W]` or `[B, 1, D, H, W]`,",
           "logits `[B, K, D, H, W]`; eps on the /255 scale of each channel's range.", ""]
    for module, names in API.items():
        mod = importlib.import_module(module)
        out += [f"## `{module}`", "", inspect.cleandoc(mod.__doc__ or ""), ""]
        for name in names:
            obj = getattr(mod, name)
            kind = "class" if inspect.isclass(obj) else "def"
            out += [f"### {kind} `{name}{_signature(obj)}`", "", inspect.cleandoc(obj.__doc__ or "(undocumented)"), ""]
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    public = not attr.startswith("_") or attr == "__call__"
                    if public and (inspect.isfunction(member) or isinstance(member, classmethod)):
                        fn = member.__func__ if isinstance(member, classmethod) else member
                        if fn.__doc__:
                            out += [f"#### `{name}.{attr}{_signature(fn)}`", "", inspect.cleandoc(fn.__doc__), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/api.md")
    target.write_text(reference())
    print(f"wrote {target}")
