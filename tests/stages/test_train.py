"""The `train` stage on tiny params: policies per seed, learning curves, metrics, MLflow, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from kalm import paths
from kalm.cli import app
from kalm.config import Params
from kalm.data import write_episodes
from kalm.rl.algos import load_policy
from kalm.stages import train
from tests.conftest import repo_params

runner = CliRunner()


def imagined_from(episodes: list, level: str) -> list:
    """Synthetic imagined episodes: real ones relabelled with a novel-level instruction."""
    return [
        dataclasses.replace(
            e, level=level, source="imagined", instruction=f"[{level}] {e.instruction}", instructions=[]
        )
        for e in episodes
    ]


def write_inputs(episodes: list, imagined: bool = True) -> None:
    write_episodes(paths.OFFLINE_EPISODES, episodes)
    if imagined:
        for level in paths.NOVEL_LEVELS:
            write_episodes(paths.imagined_episodes(level), imagined_from(episodes[:6], level))


@pytest.mark.parametrize(
    ("variant", "algo"), [("baseline", "bc"), ("kalm", "cql"), ("baseline", "bcq"), ("kalm", "dt")]
)
def test_train_writes_policies_curves_and_metrics(
    variant: str, algo: str, tiny_params: Params, tiny_episodes: list, mlflow_store: str
) -> None:
    write_inputs(tiny_episodes)
    one_policy = {"seeds": 2, "per_level": False}
    params = tiny_params.model_copy(update={"train": tiny_params.train.model_copy(update=one_policy)})
    metrics = train.run(params, variant, algo)
    assert json.loads(paths.train_metrics(variant, algo).read_text()) == metrics
    assert metrics["episodes"] == {"real": len(tiny_episodes), "imagined": 18 if variant == "kalm" else 0}
    assert metrics["steps"] == 20 and set(metrics["seeds"]) == {"seed0", "seed1"}
    for k in range(2):
        folder = paths.policy_dir(variant, algo) / f"seed{k}"
        _, meta = load_policy(folder)
        assert (meta["variant"], meta["algo"], meta["seed_index"], meta["steps"]) == (variant, algo, k, 20)
        curve = (paths.train_curves(variant, algo) / f"seed{k}.csv").read_text().splitlines()
        assert curve[0].startswith("step,epoch,") and "loss" in curve[0] and len(curve) == 3
        if algo in ("cql", "bcq"):
            assert "td_loss" in curve[0] and "mean_q" in curve[0]
    [run] = mlflow.search_runs(experiment_names=["kalm"], output_format="list")
    assert run.info.run_name == f"train@{variant}-{algo}__repro" and run.data.tags["variant"] == variant
    assert "seed1.loss" in run.data.metrics and run.data.params["train.steps"] == "20"


def test_kalm_per_level_trains_one_policy_set_per_level_on_that_levels_rollouts(
    tiny_params: Params, tiny_episodes: list
) -> None:
    write_inputs(tiny_episodes[:20])
    write_episodes(paths.imagined_episodes("hard"), imagined_from(tiny_episodes[:2], "hard"))
    params = tiny_params.model_copy(update={"train": tiny_params.train.model_copy(update={"min_imagined": 3})})
    assert params.train.per_level
    metrics = train.run(params, "kalm", "bc")
    assert metrics["per_level"] is True
    for level, imagined in {"rephrase": 6, "easy": 6, "hard": 2}.items():
        assert metrics[level]["episodes"] == {"real": 20, "imagined": imagined}
    for level in ("rephrase", "easy"):
        assert (paths.policy_dir("kalm", "bc") / level / "seed0" / "policy.safetensors").is_file()
        assert (paths.train_curves("kalm", "bc") / level / "seed0.csv").is_file()
    # 2 rollouts < train.min_imagined: no policy; evaluate scores the hard level by the baseline's
    assert metrics["hard"]["trained"] is False and not (paths.policy_dir("kalm", "bc") / "hard").exists()
    assert not list(paths.policy_dir("kalm", "bc").glob("seed*"))
    weights = [
        (paths.policy_dir("kalm", "bc") / lv / "seed0" / "policy.safetensors").read_bytes()
        for lv in ("rephrase", "easy")
    ]
    assert weights[0] != weights[1]  # each level's own rollouts


def test_same_seed_same_policy(tiny_params: Params, tiny_episodes: list) -> None:
    write_inputs(tiny_episodes, imagined=False)
    outs = []
    for i in range(2):
        out = Path(f"run{i}")
        train.train_policies(tiny_params, "baseline", "cql", tiny_episodes, [], out / "p", out / "c", False)
        outs.append((out / "p" / "seed0" / "policy.safetensors").read_bytes())
    assert outs[0] == outs[1]


def test_kalm_with_no_imagined_rollouts_is_the_baseline(tiny_params: Params, tiny_episodes: list) -> None:
    """Why evaluate may score a level left out by train.min_imagined with the baseline's policies."""
    weights = []
    for variant in ("baseline", "kalm"):
        out = Path(variant)
        train.train_policies(tiny_params, variant, "bc", tiny_episodes, [], out / "p", out / "c", False)
        weights.append((out / "p" / "seed0" / "policy.safetensors").read_bytes())
    assert weights[0] == weights[1]


def test_cli_says_which_levels_got_policies(tiny_params_file: Path, tiny_episodes: list) -> None:
    write_inputs(tiny_episodes[:20])
    data = yaml.safe_load(tiny_params_file.read_text())
    data["train"]["min_imagined"] = 7  # 6 rollouts per level, but 18 for one level below
    tiny_params_file.write_text(yaml.safe_dump(data))
    write_episodes(paths.imagined_episodes("easy"), imagined_from(tiny_episodes[:18], "easy"))
    result = runner.invoke(app, ["train", "--variant", "kalm", "--algo", "bc", "--params", str(tiny_params_file)])
    assert result.exit_code == 0, result.output
    out = result.output  # the progress bars share lines with it: find the summaries, in order
    rephrase = out.index("train kalm-bc rephrase: 6 imagined episodes, too few: scored by the baseline")
    easy = out.index("train kalm-bc easy: 20 real + 18 imagined episodes, 1 seeds x 20 steps")
    hard = out.index("train kalm-bc hard: 6 imagined episodes, too few: scored by the baseline")
    assert rephrase < easy < hard


def test_kalm_without_imagined_data_exits_1_naming_file_and_stage(tiny_params_file: Path, tiny_episodes: list) -> None:
    write_inputs(tiny_episodes, imagined=False)
    result = runner.invoke(app, ["train", "--variant", "kalm", "--algo", "bc", "--params", str(tiny_params_file)])
    assert result.exit_code == 1
    assert "data/imagined/rephrase.parquet: missing (made by `python cli.py imagine`)" in result.output
    assert not paths.policy_dir("kalm", "bc").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mix", "half", "train.mix"),
        ("encoder", "bert-base-cased", "train.encoder: 'bert-base-cased' is not all-minilm-l6-v2"),
        ("steps_per_epoch", 50, "train.steps_per_epoch: 50 is more than steps (20)"),
        ("dt", {**repo_params()["train"]["dt"], "hidden_units": [126]}, "the last a multiple of dt.num_heads (4)"),
    ],
)
def test_bad_train_params_exit_2_before_any_work(tiny_params_file: Path, key: str, value, message: str) -> None:
    data = yaml.safe_load(tiny_params_file.read_text())
    data["train"][key] = value
    tiny_params_file.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["train", "--variant", "baseline", "--algo", "bc", "--params", str(tiny_params_file)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not paths.POLICIES.exists()


def test_unknown_algo_is_a_usage_error(tiny_params_file: Path) -> None:
    result = runner.invoke(app, ["train", "--variant", "baseline", "--algo", "td3", "--params", str(tiny_params_file)])
    assert result.exit_code == 2
