"""The `collect` stage on tiny params: dataset, metrics, MLflow run, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest

from kalm import paths, tracking
from kalm.config import Params
from kalm.data import SCHEMA, read_episodes
from kalm.stages import collect
from kalm.tasks import parse_goal, training_goals, training_instructions


@pytest.fixture
def collected(tiny_params: Params, mlflow_store: str) -> dict:
    return collect.run(tiny_params, progress=False)


def test_writes_a_valid_dataset(collected: dict, tiny_params: Params) -> None:
    assert pq.read_schema(paths.OFFLINE_EPISODES).equals(SCHEMA, check_metadata=False)
    episodes = read_episodes(paths.OFFLINE_EPISODES)
    assert len(episodes) == tiny_params.collect.episodes
    goals = training_goals()
    for i, e in enumerate(episodes):
        goal = parse_goal(e.goal)
        assert goal == goals[i % 80]
        assert (e.level, e.source, e.episode_id) == ("train", "real", i)
        assert e.instructions == training_instructions(goal) and e.instruction in e.instructions
        assert e.observations.shape == (e.length + 1, 10) and 1 <= e.length <= 50
        assert not goal.holds(e.observations[0])
        # Rewards and success are the goal's own functions of the recorded states.
        expected = [goal.reward(e.observations[t], e.actions[t], e.observations[t + 1]) for t in range(e.length)]
        np.testing.assert_allclose(e.rewards, expected, rtol=1e-5, atol=1e-4)
        assert e.success == goal.holds(e.observations[-1]) == e.terminated
        assert e.success or e.length == 50


def test_metrics_file_matches_data_and_mlflow(collected: dict, mlflow_store: str) -> None:
    metrics = json.loads(Path(paths.metrics_file("collect")).read_text())
    assert metrics == collected
    episodes = read_episodes(paths.OFFLINE_EPISODES)
    assert metrics["episodes"] == len(episodes)
    assert metrics["success_rate"] == pytest.approx(np.mean([e.success for e in episodes]), abs=1e-4)
    assert metrics["mean_length"] == pytest.approx(np.mean([e.length for e in episodes]), abs=1e-3)
    assert sum(d["episodes"] for d in metrics["per_direction"].values()) == len(episodes)
    [run] = mlflow.search_runs(experiment_names=["kalm"], output_format="list")
    assert run.info.run_name == "collect__repro" and run.data.tags["stage"] == "collect"
    assert run.data.tags["cpu"] == tracking.cpu_model() and "family" in run.data.tags["cpu"]
    assert run.data.params["collect.episodes"] == str(len(episodes))
    assert run.data.metrics["success_rate"] == metrics["success_rate"]
    assert run.data.metrics["per_direction.left.episodes"] == metrics["per_direction"]["left"]["episodes"]


def test_same_seed_same_data_other_seed_other_data(tiny_params: Params) -> None:
    a = collect.collect_episodes(tiny_params, progress=False)
    b = collect.collect_episodes(tiny_params, progress=False)
    c = collect.collect_episodes(tiny_params.model_copy(update={"seed": 1}), progress=False)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        assert x.instruction == y.instruction
    assert any(not np.array_equal(x.observations[0], z.observations[0]) for x, z in zip(a, c, strict=True))


def test_behaviour_policy_mostly_succeeds(tiny_params: Params) -> None:
    params = tiny_params.model_copy(update={"collect": tiny_params.collect.model_copy(update={"episodes": 80})})
    episodes = collect.collect_episodes(params, progress=False)
    assert np.mean([e.success for e in episodes]) >= 0.7
