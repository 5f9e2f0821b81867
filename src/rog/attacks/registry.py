"""Attack names used on the command line and in result files."""
from __future__ import annotations

from rog.attacks.apgd import APGD, LOSSES
from rog.attacks.base import Attack
from rog.attacks.fab import FAB
from rog.attacks.pgd import PGD, CosPGD, RightPGD, SegPGD
from rog.attacks.square import Square

STANDARD = ["apgd-ce", "apgd-dlr", "fab-t", "square"]  # AutoAttack standard, as in the paper
# SEA (Croce, Singh and Hein 2024): APGD with progressive radius reduction on segmentation losses
SEA = ["apgd-jsd", "apgd-mce", "apgd-mbce", "apgd-msph"]
PLUS = STANDARD + ["pgd", "segpgd", "cospgd", "apgd-t", "pgd-right"] + SEA
ENSEMBLES = {"standard": STANDARD, "plus": PLUS, "sea": SEA}
QUERY_BASED = {"square"}
TARGETED = {"apgd-t", "fab-t"}
TARGETS = 9  # target classes of APGD-T and FAB-T, as AutoAttack's standard version (at most K - 1 run)


def expected_cost(name: str, budget: int, num_classes: int) -> int:
    """Forward passes attack `name` is expected to cost (the benchmark's progress estimate): a
    gradient step about 3 (forward and backward), a query 1, a targeted attack once per target."""
    runs = min(num_classes - 1, TARGETS) if name in TARGETED else 1
    return budget * (1 if name in QUERY_BASED else 3) * runs


def expand(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for a in ENSEMBLES.get(n, [n]):
            if a not in PLUS:
                raise ValueError(f"unknown attack {a!r}; choose from {PLUS} or {'/'.join(ENSEMBLES)}")
            if a not in out:
                out.append(a)
    return out


def make_attack(name: str, model, threat, budget: int, num_classes: int, seed: int = 0, **kw) -> Attack:
    """Build attack `name` with `budget` iterations (queries for Square)."""
    common = dict(num_classes=num_classes, seed=seed)
    if name == "pgd":
        return PGD(model, threat, iters=budget, **common)
    if name == "segpgd":
        return SegPGD(model, threat, iters=budget, **common)
    if name == "cospgd":
        return CosPGD(model, threat, iters=budget, **common)
    if name == "pgd-right":
        return RightPGD(model, threat, iters=budget, **common)
    if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
        loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted"}[name]
        return APGD(model, threat, iters=budget, loss=loss, target_ranks=kw.get("target_ranks", TARGETS), **common)
    if name in SEA:
        loss = next(loss for loss, (_, attack) in LOSSES.items() if attack == name)
        return APGD(model, threat, iters=budget, loss=loss, prr=True, **common)
    if name == "fab-t":
        return FAB(model, threat, iters=budget, target_ranks=kw.get("target_ranks", TARGETS),
                   threshold=kw.get("threshold"), **common)
    if name == "square":
        return Square(model, threat, queries=budget, **common)
    raise ValueError(f"unknown attack {name!r}")
