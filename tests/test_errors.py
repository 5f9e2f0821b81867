"""One base class for user errors: every error class rog defines derives from it, so the CLI's
single catch turns each into one line and exit code 2."""
import importlib
import inspect
from pathlib import Path

import rog
from rog.errors import RogError


def test_every_error_class_of_the_package_is_a_user_error_the_cli_catches():
    found = {}
    root = Path(rog.__file__).parent
    for path in root.rglob("*.py"):  # every module, namespace packages (rog.data) included
        name = ".".join(("rog", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        if name == "rog.__main__":
            continue
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{attr}"] = obj
    assert len(found) >= 8, found  # the dataset, volume, plan, checkpoint, benchmark, nuclei, tool, usage errors
    stray = [n for n, cls in found.items() if cls is not RogError and not issubclass(cls, RogError)]
    assert not stray, f"error classes the CLI would not catch: {stray}"


def test_a_user_error_from_deep_inside_ends_in_one_line(tmp_path, capsys):
    from rog.cli import main
    (tmp_path / "dataset.json").write_text("{not json")
    assert main(["plan", str(tmp_path), "-w", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.json" in err[0]


def test_configuration_files_share_one_rule_for_unknown_keys(tmp_path):
    import json
    from dataclasses import asdict

    import pytest

    from rog.plan import Plan, PlanError
    from rog.train.trainer import TrainConfig
    saved = {**asdict(TrainConfig()), "learning_rate": 0.1}  # a misspelt lr
    with pytest.raises(RogError, match=r"run/config.json: unknown key\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict(saved, "run/config.json")
    with pytest.raises(RogError, match="'epoch'"):  # an override is held to it too
        TrainConfig.from_dict(asdict(TrainConfig()), "run/config.json", epoch=3)
    assert TrainConfig.from_dict(asdict(TrainConfig()), "run/config.json", epochs=3).epochs == 3
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"patch_sizee": [1, 2, 3]}))
    with pytest.raises(PlanError, match=r"plan.json: unknown key\(s\) \['patch_sizee'\]"):
        Plan.load(path)


def test_benchmark_configs_name_the_field_and_its_flag():
    import pytest

    from rog.bench import BenchmarkConfig, CorruptionConfig
    with pytest.raises(RogError, match=r"^eps \(--eps\) \[300.0\]: each must be in \(0, 255\]"):
        BenchmarkConfig(eps=[300])
    with pytest.raises(RogError, match=r"^scope \(--scope\)"):
        BenchmarkConfig(scope="slab")
    with pytest.raises(RogError, match=r"^severities \(--severities\)"):
        CorruptionConfig(severities=[7])
