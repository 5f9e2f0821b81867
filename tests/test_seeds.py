"""Aggregation over training seeds and the AUC gain with its bootstrap interval."""
import numpy as np
import pytest

from rog.evaluate.seeds import SeedRun, across_seeds, auc_gain, mean_sd


def _run(clean, auc, e8, cases):
    return SeedRun(clean, auc, {"8.0": e8}, {c: {"0.0": clean, "8.0": d} for c, d in cases.items()})


def test_mean_and_sample_sd_over_seeds_with_every_per_case_point():
    g = across_seeds({0: _run(0.8, 0.30, 0.2, {"a": 0.1, "b": 0.3}),
                      1: _run(0.7, 0.40, 0.4, {"a": 0.5, "b": 0.3}),
                      2: _run(0.9, 0.35, 0.3, {"a": 0.2, "b": 0.4})})
    assert g.seeds == [0, 1, 2]
    assert g.clean_dice.mean == pytest.approx(0.8) and g.clean_dice.sd == pytest.approx(0.1)
    assert g.auc_worst_case.mean == pytest.approx(0.35) and g.auc_worst_case.sd == pytest.approx(0.05)
    assert g.eps["8.0"].mean == pytest.approx(0.3) and g.eps["8.0"].sd == pytest.approx(0.1)
    assert sorted(map(tuple, g.points["8.0"])) == [(0, "a", 0.1), (0, "b", 0.3), (1, "a", 0.5), (1, "b", 0.3),
                                                       (2, "a", 0.2), (2, "b", 0.4)]
    assert len(g.points["0.0"]) == 6
    assert mean_sd([0.5]).sd == 0.0


def _groups(free: dict, clean: dict):
    """Two groups from per-(seed, case) worst-case Dice at 8/255 (clean Dice 1 everywhere): the
    per-case AUC over eps 0-8 is then (1 + d) / 2."""
    def runs(per):
        out = {}
        for seed, cases in per.items():
            pts = {c: {"0.0": 1.0, "8.0": d} for c, d in cases.items()}
            mean8 = float(np.mean(list(cases.values())))
            out[seed] = SeedRun(1.0, (1 + mean8) / 2, {"8.0": mean8}, pts)
        return across_seeds(out)
    return {"free": runs(free), "clean": runs(clean)}


def test_gain_has_a_paired_bootstrap_interval_over_seeds_and_cases():
    # case b is hard for both models, a easy: the pairing removes that, the gain is 0.1 everywhere
    clean = {s: {"a": 0.7 + 0.01 * s, "b": 0.1 + 0.01 * s} for s in range(3)}
    free = {s: {c: d + 0.2 for c, d in cases.items()} for s, cases in clean.items()}
    g = auc_gain(_groups(free, clean), "free", "clean")
    assert g.gain == pytest.approx(0.1) and g.seeds == 3 and g.cases == 2
    assert g.holds and g.interval == pytest.approx([0.1, 0.1])
    assert "excludes 0" in g.text and "too narrow" in g.text
    groups = _groups(free, clean)
    # the gain is the difference of the groups' mean AUCs (the AUC is linear in the curve)
    assert g.gain == pytest.approx(groups["free"].auc_worst_case.mean - groups["clean"].auc_worst_case.mean)
    # the same mean gain from one seed that gained a lot and two that lost: the interval says so
    noisy = {0: {c: d + 0.9 for c, d in clean[0].items()}, 1: {c: d - 0.15 for c, d in clean[1].items()},
             2: {c: d - 0.15 for c, d in clean[2].items()}}
    n = auc_gain(_groups(noisy, clean), "free", "clean")
    assert n.gain == pytest.approx(0.1) and not n.holds and n.interval[0] < 0 < n.interval[1]
    assert "includes 0" in n.text
    one = auc_gain(_groups({0: {"a": 0.9}}, {0: {"a": 0.1}}), "free", "clean")
    assert not one.holds and "no interval" in one.text
    assert auc_gain({"free": _groups(free, clean)["free"]}, "free", "clean") is None


def test_gain_interval_behaves_like_a_test_under_the_null():
    # no true gain: seed and case effects shared by both models, independent noise per pair
    rng = np.random.default_rng(0)
    false_positives = 0
    for _ in range(100):
        seed_fx, case_fx = rng.normal(0, 0.1, 5), rng.normal(0, 0.1, 6)
        clean = {s: {f"c{c}": 0.5 + seed_fx[s] + case_fx[c] for c in range(6)} for s in range(5)}
        free = {s: {c: d + rng.normal(0, 0.05) for c, d in cases.items()} for s, cases in clean.items()}
        false_positives += auc_gain(_groups(free, clean), "free", "clean", resamples=2000).holds
    assert false_positives <= 15  # nominal 5 %; a few more from the percentile bootstrap's small-n bias
