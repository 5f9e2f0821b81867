"""Aggregation over training seeds and the AUC-gain statement."""
import pytest

from rog.evaluate.seeds import across_seeds, auc_gain, mean_sd


def _run(clean, auc, e8, cases):
    return {"clean_dice": clean, "auc_worst_case": auc, "eps": {"8.0": e8},
            "cases": {c: {"0.0": clean, "8.0": d} for c, d in cases.items()}}


def test_mean_and_sample_sd_over_seeds_with_every_per_case_point():
    g = across_seeds({0: _run(0.8, 0.30, 0.2, {"a": 0.1, "b": 0.3}),
                      1: _run(0.7, 0.40, 0.4, {"a": 0.5, "b": 0.3}),
                      2: _run(0.9, 0.35, 0.3, {"a": 0.2, "b": 0.4})})
    assert g["seeds"] == [0, 1, 2]
    assert g["clean_dice"]["mean"] == pytest.approx(0.8) and g["clean_dice"]["sd"] == pytest.approx(0.1)
    assert g["auc_worst_case"]["mean"] == pytest.approx(0.35) and g["auc_worst_case"]["sd"] == pytest.approx(0.05)
    assert g["eps"]["8.0"]["mean"] == pytest.approx(0.3) and g["eps"]["8.0"]["sd"] == pytest.approx(0.1)
    assert sorted(map(tuple, g["points"]["8.0"])) == [(0, "a", 0.1), (0, "b", 0.3), (1, "a", 0.5), (1, "b", 0.3),
                                                       (2, "a", 0.2), (2, "b", 0.4)]
    assert len(g["points"]["0.0"]) == 6
    assert mean_sd([0.5])["sd"] == 0.0


def _group(aucs):
    return {"auc_worst_case": mean_sd(aucs)}


def test_gain_is_weighed_against_twice_the_larger_seed_sd():
    held = auc_gain({"free": _group([0.50, 0.52, 0.54]), "clean": _group([0.20, 0.22, 0.18])}, "free", "clean")
    assert held["holds"] and held["gain"] == pytest.approx(0.32) and held["spread"] == pytest.approx(0.02)
    assert "more than twice the larger sd" in held["text"] and "not more" not in held["text"]
    # the same mean gain with a noisy defended model: 0.32 < 2 x 0.2
    noisy = auc_gain({"free": _group([0.32, 0.52, 0.72]), "clean": _group([0.20, 0.22, 0.18])}, "free", "clean")
    assert not noisy["holds"] and "not more than twice" in noisy["text"]
    worse = auc_gain({"free": _group([0.1, 0.1]), "clean": _group([0.2, 0.2])}, "free", "clean")
    assert not worse["holds"] and "no gain" in worse["text"]
    one = auc_gain({"free": _group([0.9]), "clean": _group([0.1])}, "free", "clean")
    assert not one["holds"] and "one seed only" in one["text"]
    assert auc_gain({"free": _group([0.9])}, "free", "clean") is None
