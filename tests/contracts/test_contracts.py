"""dvc.yaml, params.yaml, the CLI, the stage modules and kalm.paths agree with each other (YAML only)."""

from __future__ import annotations

import importlib
import itertools

import yaml

from kalm import paths
from kalm.cli import app
from kalm.config import Params, flatten
from tests.conftest import REPO, repo_params

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
TRAINED = PARAMS["train"]["algos"]  # the matrix's algorithms


def expand(stages: dict) -> dict:
    """Matrix stages as DVC generates them (``train@baseline-cql``), with ``${item.*}`` substituted and a matrix
    axis read from params.yaml (``${train.algos}``)."""
    out = {}
    for name, stage in stages.items():
        matrix = stage.get("matrix")
        if not matrix:
            out[name] = stage
            continue
        body = yaml.safe_dump({k: v for k, v in stage.items() if k != "matrix"})
        axes = [PARAMS["train"]["algos"] if axis == "${train.algos}" else axis for axis in matrix.values()]
        for values in itertools.product(*axes):
            text = body
            for key, value in zip(matrix, values, strict=True):
                text = text.replace(f"${{item.{key}}}", str(value))
            out[f"{name}@{'-'.join(map(str, values))}"] = yaml.safe_load(text)
    return out


STAGES = expand(DVC["stages"])


def base(name: str) -> str:
    return name.split("@")[0]


def outs_of(stage: dict) -> list[str]:
    """The paths a stage declares as outputs (``- metrics/ground.json: {cache: false}`` included)."""
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


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
    assert commands == {base(name) for name in STAGES}
    for name, stage in STAGES.items():
        module = importlib.import_module(f"kalm.stages.{base(name)}")
        assert base(name) == module.STAGE and callable(module.run)
        if "@" in name:  # train@<variant>-<algo>
            variant, algo = name.split("@")[1].split("-")
            assert stage["cmd"] == f"python cli.py train --variant {variant} --algo {algo}"
            expected = str(paths.train_metrics(variant, algo))
        elif name == "evaluate":
            assert stage["cmd"] == "python cli.py evaluate"
            expected = str(paths.EVAL_METRICS)
        else:
            assert stage["cmd"] == f"python cli.py {name}"
            expected = str(paths.metrics_file(name))
        # DVC reads one metrics file, evaluate's summary; every other stage JSON is an uncached output.
        if name == "evaluate":
            assert stage["metrics"] == [{expected: {"cache": False}}]
            expected = str(paths.EVAL_DETAILS)
        else:
            assert "metrics" not in stage
        assert {expected: {"cache": False}} in stage["outs"]


def test_stage_params_are_keys_of_params_yaml() -> None:
    flat = flatten(repo_params())
    for stage in STAGES.values():
        for key in stage["params"]:
            assert key in Params.model_fields or key in flat or any(f.startswith(f"{key}.") for f in flat), key


def test_deps_exist_and_name_the_stage_module() -> None:
    outs = {out for stage in STAGES.values() for out in outs_of(stage)}
    for name, stage in STAGES.items():
        for dep in stage["deps"]:
            holds_outputs = any(out.startswith(dep + "/") for out in outs)  # models/policies: every policy
            assert dep in outs or holds_outputs or (REPO / dep).exists(), dep
        assert f"src/kalm/stages/{base(name)}.py" in stage["deps"]
        assert "src" not in stage["deps"] and "src/kalm" not in stage["deps"]


def test_outputs_are_the_paths_of_kalm_paths() -> None:
    declared = {str(v) for v in vars(paths).values() if isinstance(v, type(paths.DATA))}
    declared |= {str(paths.policy_dir(v, a)) for v in paths.VARIANTS for a in paths.ALGOS}
    declared |= {str(paths.imagined_episodes(level)) for level in paths.NOVEL_LEVELS}
    declared |= {str(paths.metrics_file(base(name))) for name in STAGES}
    declared |= {str(paths.train_metrics(v, a)) for v in paths.VARIANTS for a in paths.ALGOS}
    outs = {out for stage in STAGES.values() for out in outs_of(stage)}
    assert outs <= declared
    assert str(paths.OFFLINE_EPISODES) in STAGES["collect"]["outs"]
    assert outs_of(STAGES["base_model"])[0] == str(paths.BASE_MODEL)
    assert outs_of(STAGES["ground"])[0] == str(paths.GROUNDED_MODEL)
    assert [next(iter(p)) for p in STAGES["ground"]["plots"]] == [str(paths.GROUND_LOSS)]
    assert [next(iter(p)) for p in STAGES["evaluate"]["plots"]] == [str(paths.EVAL_SUCCESS)]
    for variant in paths.VARIANTS:
        for algo in TRAINED:
            stage = STAGES[f"train@{variant}-{algo}"]
            assert outs_of(stage) == [str(paths.policy_dir(variant, algo)), str(paths.train_metrics(variant, algo))]
            assert [next(iter(p)) for p in stage["plots"]] == [str(paths.train_curves(variant, algo))]


def test_stages_depend_on_their_upstream_outputs() -> None:
    outs = {out: name for name, stage in STAGES.items() for out in outs_of(stage)}
    upstream = {  # a folder dep (models/policies) depends on every output inside it
        name: {stage_name for d in stage["deps"] for out, stage_name in outs.items() if (out + "/").startswith(d + "/")}
        for name, stage in STAGES.items()
    }
    policies = {f"train@{v}-{a}" for v in paths.VARIANTS for a in TRAINED}
    assert upstream == {
        "base_model": set(),
        "collect": set(),
        "ground": {"base_model", "collect"},
        "imagine": {"base_model", "collect", "ground"},
        "encode": {"base_model", "collect", "ground", "imagine"},  # train.encoder: grounded
        **{name: {"base_model", "collect", "ground", "imagine", "encode"} for name in policies},
        # the grounded LLM is scored as a policy too; the summary carries ground's and imagine's headline figures
        "evaluate": policies | {"base_model", "ground", "imagine", "encode"},
    }
