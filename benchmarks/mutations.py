"""Do the attack tests catch a broken attack? Each mutation below is a real defect (issue 40's
list and the attacks' other load-bearing details); each is applied to a copy of the package,
and the attack tests run against it. A mutation is caught when at least one test fails.

    python benchmarks/mutations.py [NAME ...]     # default: every mutation, and the unmutated code

Prints one line per mutation: caught or MISSED, and the tests that failed. The unmutated code
must pass every test. Run alone on the machine (each run is a pytest process of the attack
tests: about a minute).
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_attacks.py", "tests/test_attack_strength.py", "tests/test_attack_formulas.py"]

# name: (file under src/rog/attacks, the exact text, its replacement)
MUTATIONS = {
    "apgd: half the step size": ("apgd.py", "step = torch.full((b,), 2.0 * self.threat.radius",
                                 "step = torch.full((b,), 1.0 * self.threat.radius"),
    "apgd: no momentum": ("apgd.py", "momentum = 0.75 if i > 0 else 1.0", "momentum = 1.0"),
    "apgd: the step never halves": ("apgd.py", "step = torch.where(reduce, step / 2.0, step)", "step = step"),
    "apgd: never back to the best point": ("apgd.py", "u = torch.where(reduce.view(view), u_best, u)", "u = u"),
    "apgd: 2 of the steps": ("apgd.py", "for i in range(n):", "for i in range(min(n, 2)):"),
    "apgd: oscillation threshold 0.5": ("apgd.py", "RHO = 0.75", "RHO = 0.5"),
    "apgd-t: the wrong target": ("apgd.py", "target = order[:, -rank]", "target = order[:, 0]"),
    "dlr: best other always the runner-up": ("losses.py", "best_other = torch.where(logits.argmax(1) == y, z[:, -2], top)",
                                             "best_other = z[:, -2]"),
    "dlr: denominator z1 - z2": ("losses.py", "/ (top - z[:, -3] + 1e-12)", "/ (top - z[:, -2] + 1e-12)"),
    "segpgd: weights swapped": ("losses.py", "(1 - lam) * correct * voxel + lam * (1 - correct) * voxel",
                                "lam * correct * voxel + (1 - lam) * (1 - correct) * voxel"),
    "cospgd: weights inverted": ("losses.py", "cos.detach() * F.cross_entropy", "(1 - cos.detach()) * F.cross_entropy"),
    "pgd-right: every voxel": ("losses.py", "_mean(correct * F.cross_entropy(logits, y, reduction=\"none\"), w)",
                               "_mean(F.cross_entropy(logits, y, reduction=\"none\"), w)"),
    "pgd-right: constant step": ("pgd.py", "return first * 0.5 * (1 + math.cos(math.pi * t / max(self.iters, 1)))",
                                 "return first"),
    "fab-t: no alpha bias": ("fab.py", "clamp(0, self.alpha_max)", "clamp(0, 0)"),
    "fab-t: boundary at the weakest voxel": ("fab.py", "rank = torch.minimum((count - 1).clamp(min=0), last)",
                                             "rank = flipped.clamp(max=last)"),
    "fab-t: boundary over all voxels": ("fab.py", "in_band = (ranks >= low[:, None])",
                                        "in_band = (ranks >= flipped[:, None]) | (ranks >= low[:, None])"),
    "fab-t: no overshoot": ("fab.py", "eta: float = 1.05", "eta: float = 1.0"),
    "square: schedule from the second query": ("square.py", "p_selection(self.p_init, used - 1, self.queries - 1)",
                                               "p_selection(self.p_init, used, self.queries)"),
    "square: never the last position": ("square.py", "high=s - w + 1)", "high=max(s - w, 1))"),
    "square: accepts every candidate": ("square.py", "improved = (dice < best_dice) | ((dice == best_dice) & (margin < best_margin))",
                                        "improved = dice <= best_dice"),
    "square: margin of every voxel": ("losses.py", "m = (zy - other).clamp(min=0).flatten(1)",
                                      "m = (zy - other).flatten(1)"),
}


def run(mutation: str | None) -> tuple[bool, list[str]]:
    """(every test passed, the failed tests) with `mutation` applied to a copy (None: as is)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / "src", copy / "src")
        shutil.copytree(ROOT / "tests", copy / "tests")
        shutil.copy(ROOT / "pyproject.toml", copy)
        if mutation:
            name, old, new = MUTATIONS[mutation]
            f = copy / "src" / "rog" / "attacks" / name
            text = f.read_text()
            if text.count(old) != 1:
                raise SystemExit(f"{mutation}: {name} holds the text {text.count(old)} times, not once")
            f.write_text(text.replace(old, new))
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=copy,
                             env={**os.environ, "PYTHONPATH": str(copy / "src") + ":" + str(copy)},
                             capture_output=True, text=True)
        failed = [line.split(" ")[1] for line in out.stdout.splitlines() if line.startswith("FAILED")]
        return out.returncode == 0, failed


def main(names: list[str]) -> int:
    clean, failed = run(None)
    print(f"unmutated: {'all tests pass' if clean else 'FAILS ' + ', '.join(failed)}", flush=True)
    missed = 0
    for name in names or list(MUTATIONS):
        ok, failed = run(name)
        missed += ok
        tests = ", ".join(sorted({f.split("::")[-1] for f in failed}))
        print(f"{name}: {'MISSED' if ok else 'caught by ' + tests}", flush=True)
    return 1 if missed or not clean else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
