"""The defence-recipe harness (`benchmarks/defence_recipes.py`) ranks on validation cases only."""
import os
import sys
from pathlib import Path

import pytest

from rog.pipeline.stages import train_and_decide
from rog.rundir import Workdir
from rog.train.trainer import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from defence_recipes import (  # noqa: E402 - the harness itself
    RECIPES, Score, choose, fine_tune_config, recipe_settings, task_settings, validate, validation_request)


def test_recipes_are_ranked_on_the_validation_split_and_never_read_a_test_case(prepared, tmp_path, monkeypatch):
    from rog.data.preprocess import labelled_cases
    source, plan = prepared
    wd = Workdir(tmp_path / "work")
    wd.root.mkdir()
    for name in ("plan.json", "preprocessed"):
        os.symlink((source.root / name).resolve(), wd.root / name)
    plan.save(tmp_path / "plan.json")
    config = TrainConfig(epochs=1, iterations=2, batch_size=2, seed=0, device="cpu")
    train_and_decide(plan, wd, "clean-s0", config, progress=False)
    run = wd.run("clean-s0")
    test = set(labelled_cases(wd.preprocessed, "test"))
    split = run.read_splits()
    assert test and split["val"] and not test & set(split["val"])
    req = validation_request(run, tmp_path / "val")
    assert req.cases == split["val"] and req.config.scope == "volume"

    # the ranking stage: reading the test cases (or the default cases, which are the test cases) fails it
    def no_test(out_dir, which="training"):
        assert which != "test", "the ranking read the test cases"
        return labelled_cases(out_dir, which)

    def no_default(*args, **kwargs):
        raise AssertionError("the ranking asked for the default (test) cases")

    monkeypatch.setattr("rog.bench.cases.labelled_cases", no_test)
    monkeypatch.setattr("rog.bench.cases.default_cases", no_default)
    monkeypatch.setattr("rog.pipeline.models.default_cases", no_default)
    score = validate(run, tmp_path / "val")
    from rog.rundir import ResultsDir
    assert sorted(ResultsDir(tmp_path / "val").read().clean) == sorted(split["val"])
    assert 0 <= score.attacked <= score.clean + 1e-9 and score.score == pytest.approx((score.clean + score.attacked) / 2)
    # the choice: the best mean of clean and attacked Dice over seeds, whatever the clean Dice alone says
    assert choose({"a": [Score(0.8, 0.2), Score(0.8, 0.2)], "b": [Score(0.6, 0.5), Score(0.6, 0.45)]}) == "b"


def test_fresh_seeds_are_the_demos_settings_from_the_first_seed_and_its_own_recipe_is_its_rog_free():
    from rog.demo import NUCLEI, SYNTHETIC
    s = task_settings("nuclei", [3, 4, 5])
    assert (s.first_seed, s.seeds) == (3, 3) and s.defence == NUCLEI.defence and s.epochs == NUCLEI.epochs
    # the demo's own recipe reuses the demo's rog_free runs; another is fine-tuned apart
    own = recipe_settings(s, "nuclei", "free_lr1e-3_robust")
    assert own.defence == s.defence and recipe_settings(s, "nuclei", "free_lr1e-3").defence != s.defence
    # on the synthetic task the demo's own is Free AT at the clean training's lr
    assert recipe_settings(task_settings("synthetic", [0]), "synthetic", "free").defence == SYNTHETIC.defence
    # no two recipes train alike on the demo's task: free_warm_mix, written before the demo's lr
    # moved to 1e-3, had become free_lr1e-3_warm_mix
    configs = [fine_tune_config(recipe_settings(s, "nuclei", r), 3, "init") for r in RECIPES]
    assert all(a != b for i, a in enumerate(configs) for b in configs[i + 1:])
    with pytest.raises(SystemExit, match="consecutive"):
        task_settings("nuclei", [0, 2])
