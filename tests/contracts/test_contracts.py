"""dvc.yaml, params.yaml, the CLI, the stage modules and kalm.paths agree with each other (YAML only)."""

from __future__ import annotations

import importlib

import yaml

from kalm import paths
from kalm.cli import app
from kalm.config import Params, flatten
from tests.conftest import REPO, repo_params

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]


def fields(model: type) -> set[str]:
    return set(model.model_fields)


def test_params_yaml_and_config_models_have_the_same_keys() -> None:
    data = repo_params()
    assert set(data) == fields(Params)
    for name, field in Params.model_fields.items():
        if isinstance(data[name], dict):
            assert set(data[name]) == fields(field.annotation), name


def test_every_stage_has_a_command_a_module_and_a_metrics_file() -> None:
    commands = {c.name for c in app.registered_commands}
    assert commands == set(STAGES)
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"python cli.py {name}"
        module = importlib.import_module(f"kalm.stages.{name}")
        assert name == module.STAGE and callable(module.run)
        metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage["metrics"]]
        assert metrics == [str(paths.metrics_file(name))]
        assert all(m[str(paths.metrics_file(name))] == {"cache": False} for m in stage["metrics"])


def test_stage_params_are_keys_of_params_yaml() -> None:
    flat = flatten(repo_params())
    for stage in STAGES.values():
        for key in stage["params"]:
            assert key in Params.model_fields or key in flat, key


def test_deps_exist_and_name_the_stage_module() -> None:
    outs = {out for stage in STAGES.values() for out in stage.get("outs", [])}
    for name, stage in STAGES.items():
        for dep in stage["deps"]:
            assert dep in outs or (REPO / dep).exists(), dep
        assert f"src/kalm/stages/{name}.py" in stage["deps"]
        assert "src" not in stage["deps"] and "src/kalm" not in stage["deps"]


def test_outputs_are_the_paths_of_kalm_paths() -> None:
    declared = {str(v) for v in vars(paths).values() if isinstance(v, type(paths.DATA))}
    outs = {out for stage in STAGES.values() for out in stage.get("outs", [])}
    assert outs <= declared
    assert str(paths.OFFLINE_EPISODES) in STAGES["collect"]["outs"]
    assert STAGES["base_model"]["outs"] == [str(paths.BASE_MODEL)]
    assert STAGES["ground"]["outs"] == [str(paths.GROUNDED_MODEL)]
    assert [next(iter(p)) for p in STAGES["ground"]["plots"]] == [str(paths.GROUND_LOSS)]


def test_stages_depend_on_their_upstream_outputs() -> None:
    outs = {out: name for name, stage in STAGES.items() for out in stage.get("outs", [])}
    upstream = {name: {outs[d] for d in stage["deps"] if d in outs} for name, stage in STAGES.items()}
    assert upstream == {"base_model": set(), "collect": set(), "ground": {"base_model", "collect"}}
