"""params.yaml -> typed config: every key present, unknown / missing / ill-typed keys rejected in one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kalm.config import ConfigError, Params, flatten, load_params, parse_params
from tests.conftest import REPO, repo_params


def test_repo_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.env.max_episode_steps == 50
    with pytest.raises(Exception, match="frozen"):
        params.seed = 3  # type: ignore[misc]


def mutate(path: str, value: object = None, delete: bool = False) -> dict:
    data = copy.deepcopy(repo_params())
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (mutate("collect.episodez", 5), r"collect\.episodez: unknown key; allowed here: episodes, epsilon, policy"),
        (mutate("bogus", 1), r"bogus: unknown key; allowed here: seed, env, goals"),
        (mutate("collect.episodes", delete=True), r"collect\.episodes: missing"),
        (mutate("tracking", delete=True), r"tracking: missing"),
        (mutate("collect.episodes", "many"), r"collect\.episodes: Input should be a valid integer.*'many'"),
        (mutate("collect.episodes", 0), r"collect\.episodes: Input should be greater than 0"),
        (mutate("collect.epsilon", 1.5), r"collect\.epsilon: Input should be less than or equal to 1"),
        (mutate("seed", True), r"seed: Input should be a valid integer"),
        (mutate("goals.holdout_fraction", 1.0), r"goals\.holdout_fraction: Input should be less than 1"),
        (["not", "a", "mapping"], r"expected a mapping of sections"),
    ],
)
def test_bad_params_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_params(data, "params.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("params.yaml: ")


@pytest.mark.parametrize("features", ["pairs", "relations"])
def test_pair_features_need_one_slot_per_state(features: str) -> None:
    data = mutate("ground.state_features", features)
    data["ground"]["state_slots"] = "balls"
    with pytest.raises(ConfigError, match=rf"ground\.state_features: {features} needs state_slots: one"):
        parse_params(data, "params.yaml")


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [0\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML") as err:
        load_params(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read params"):
        load_params(tmp_path / "missing.yaml")


def test_flatten_uses_section_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(repo_params()))
    flat = flatten(load_params(path))
    assert flat["collect.episodes"] == repo_params()["collect"]["episodes"]
    assert flat["seed"] == repo_params()["seed"]
