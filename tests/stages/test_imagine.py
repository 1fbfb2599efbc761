"""`imagine` on the tiny backbone: cached = uncached generation, stopping rules, reward labels, the stage's outputs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from kalm import paths
from kalm.config import Params
from kalm.data import read_episodes, write_episodes
from kalm.env import CLEVRRobotEnv
from kalm.llm.generate import generate_rollout_uncached, generate_rollouts
from kalm.llm.model import ModelSpec, build_trainable, numeric_of, sample_builder
from kalm.stages import ground, imagine
from kalm.tasks import parse_goal


@pytest.fixture(scope="module", params=["one", "balls"])
def lively_lm(tiny_base: Path, request):
    """The tiny model with random (not zero) heads, so actions differ and balls move in generated rollouts; a state
    as one slot, or one per ball (a state then appends five positions while decoding)."""
    spec = ModelSpec(base_dir=str(tiny_base), num_layers=0, finetune="lora", state_slots=request.param)
    lm, tokenizer = build_trainable(spec, torch.float32, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for head in (numeric_of(lm).state_out, numeric_of(lm).action_out):
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.05)
    lm.eval()
    builder = sample_builder(tokenizer, lm)
    return lm, tokenizer, builder


def test_cached_batched_generation_agrees_with_the_naive_loop(lively_lm, tiny_episodes) -> None:
    lm, tokenizer, builder = lively_lm
    # Instructions of different lengths, so the batch is left-padded.
    instructions = ["push the red ball left of the blue ball", "go", "move the cyan ball behind the green one please"]
    starts = np.stack([e.observations[0] for e in tiny_episodes[:3]])
    cached = generate_rollouts(lm, builder, tokenizer.pad_token_id, instructions, starts, 6)
    for (states, actions, _), text, start in zip(cached, instructions, starts, strict=True):
        naive_states, naive_actions, _ = generate_rollout_uncached(lm, builder, text, start, 6)
        np.testing.assert_array_equal(actions, naive_actions)
        np.testing.assert_allclose(states, naive_states, atol=1e-4)
        assert len(actions) == 6 and np.abs(states[-1] - states[0]).max() > 1e-3  # the heads do move balls
    assert len({tuple(a) for _, a, _ in cached}) > 1


def test_rows_stop_at_their_own_step_limit_or_first_success(lively_lm, tiny_episodes) -> None:
    lm, tokenizer, builder = lively_lm
    starts = np.stack([e.observations[0] for e in tiny_episodes[:4]])
    rollouts = generate_rollouts(
        lm, builder, tokenizer.pad_token_id, ["a"] * 4, starts, [1, 5, 1, 5],
        is_success=lambda row, prev, a, nxt: row == 3 and not np.allclose(prev, starts[3]),  # 2nd step of row 3
    )  # fmt: skip
    assert [len(a) for _, a, _ in rollouts] == [1, 5, 1, 2]
    assert [ok for *_, ok in rollouts] == [False, False, False, True]


def test_rollouts_come_back_in_task_order_whatever_the_batching(lively_lm, tiny_params: Params) -> None:
    """imagine_level batches rollouts of one instruction together; each rollout is the task's own, as alone."""
    lm, tokenizer, builder = lively_lm
    env = CLEVRRobotEnv(max_episode_steps=4)
    params = tiny_params.model_copy(update={"env": tiny_params.env.model_copy(update={"max_episode_steps": 4})})
    tasks = imagine.imagination_tasks(params, "rephrase", 7)
    grouped = params.model_copy(update={"imagine": params.imagine.model_copy(update={"batch_size": 4})})
    alone = params.model_copy(update={"imagine": params.imagine.model_copy(update={"batch_size": 1})})
    a, _ = imagine.imagine_level(lm, builder, tokenizer.pad_token_id, grouped, "rephrase", 7, env)
    b, _ = imagine.imagine_level(lm, builder, tokenizer.pad_token_id, alone, "rephrase", 7, env)
    assert [e.instruction for e in a] == [text for text, _ in tasks] == [e.instruction for e in b]
    assert [e.episode_id for e in a] == list(range(7))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_allclose(x.observations, y.observations, atol=1e-4)
        assert x.seed == y.seed and x.goal == y.goal


def test_reward_labels_equal_the_env_rewards_of_real_episodes(tiny_episodes) -> None:
    for episode in tiny_episodes:
        goal = parse_goal(episode.goal)
        labels = imagine.label_rewards(goal, episode.observations, episode.actions)
        np.testing.assert_allclose(labels, episode.rewards, atol=1e-6)


def test_real_actions_replayed_from_the_real_start_reach_the_goal(tiny_episodes) -> None:
    env = CLEVRRobotEnv()
    for episode in tiny_episodes[:8]:
        goal = parse_goal(episode.goal)
        assert imagine.replay_succeeds(env, goal, episode.observations[0], episode.actions) == episode.success


def test_unrealistic_transitions_are_flagged() -> None:
    still = np.tile(np.array([0.0, 0.2, 0.2, 0.2, -0.2, 0.2, 0.0, 0.4, 0.0, 0.0], dtype=np.float32), (3, 1))
    states = still.copy()
    states[1, 0] = 0.25  # red moves 0.25: realistic
    states[2, 0] = 0.9  # then 0.65 further, off the workbench
    np.testing.assert_array_equal(imagine.out_of_workbench(states), [False, True])
    np.testing.assert_array_equal(imagine.exceeds_dynamics(states, limit=0.4), [False, True])


def test_the_filter_keeps_all_realistic_or_successful_rollouts(tiny_episodes) -> None:
    episodes = tiny_episodes[:6]
    off = dataclasses.replace(episodes[0], observations=episodes[0].observations.copy())
    off.observations[-1, 0] = 0.9  # red ends beyond the right wall
    failed = dataclasses.replace(episodes[1], success=False)
    rollouts = [off, failed, *episodes[2:]]
    realistic = [e for e in rollouts[1:] if not imagine.out_of_workbench(e.observations).any()]
    assert imagine.kept(rollouts, "none", 0.47) == rollouts
    assert imagine.kept(rollouts, "realistic", 0.47) == realistic and off not in realistic
    successful = imagine.kept(rollouts, "successful", 0.47)
    assert successful == [e for e in rollouts if e.success] and failed not in successful


def test_imagination_tasks_cover_the_imagination_split_evenly(tiny_params: Params) -> None:
    tasks = imagine.imagination_tasks(tiny_params, "rephrase", 500)
    texts = [t for t, _ in tasks]
    counts = np.unique(texts, return_counts=True)[1]
    assert len(tasks) == 500 and counts.max() - counts.min() <= 1
    evaluation = {t for t, _ in imagine.shipped_suite("rephrase").split(0.25, tiny_params.seed)[1].expand()}
    assert not evaluation & set(texts)  # held-out phrasings are never imagined


@pytest.fixture
def imagined(tiny_params: Params, tiny_base: Path, tiny_episodes: list, mlflow_store: str) -> dict:
    shutil.copytree(tiny_base, paths.BASE_MODEL)
    write_episodes(paths.OFFLINE_EPISODES, tiny_episodes)
    # The SFT's own heads: the tiny model's fitted heads (fitted on 4 episodes) pass no goal's test in 4 rollouts,
    # and the checks below need kept rollouts. Imagination with fitted heads: tests/llm/test_heads.py.
    ground.run(tiny_params.model_copy(update={"ground": tiny_params.ground.model_copy(update={"heads": "linear"})}))
    return imagine.run(tiny_params)


def test_imagine_writes_three_datasets_metrics_and_strips(imagined: dict, tiny_params: Params) -> None:
    assert json.loads(paths.metrics_file("imagine").read_text()) == json.loads(json.dumps(imagined))
    counts = {"rephrase": tiny_params.imagine.rephrase, "easy": tiny_params.imagine.easy, "hard": 2}
    assert sum(imagined["levels"][level]["kept"] for level in paths.NOVEL_LEVELS) > 0  # something to check below
    for level in paths.NOVEL_LEVELS:
        episodes = read_episodes(paths.imagined_episodes(level))
        assert imagined["levels"][level]["rollouts"] == counts[level]
        # the default filter keeps the rollouts whose goal test holds at the end (the match rate)
        assert (
            len(episodes)
            == imagined["levels"][level]["kept"]
            == round(imagined["levels"][level]["match_rate"] * counts[level])
        )
        assert all(e.success for e in episodes)
        assert {e.source for e in episodes} <= {"imagined"} and {e.level for e in episodes} <= {level}
        for e in episodes:
            goal = parse_goal(e.goal)
            assert e.length == 1 if level == "easy" else 1 <= e.length <= tiny_params.env.max_episode_steps
            np.testing.assert_allclose(e.rewards, imagine.label_rewards(goal, e.observations, e.actions))
            assert e.success == goal.is_success(e.observations[-2], int(e.actions[-1]), e.observations[-1])
        level_metrics = imagined["levels"][level]
        for key in ("match_rate", "replay_success_rate", "out_of_workbench_rate", "exceeds_dynamics_rate"):
            assert 0.0 <= level_metrics[key] <= 1.0
        assert level_metrics["match_rate"] * counts[level] == pytest.approx(len(episodes))  # kept = matched
    assert 0.2 < imagined["dynamics_limit"] < 1.0
    assert len(list(paths.IMAGINE_REPORTS.glob("*.png"))) == 3
    [run] = mlflow.search_runs(experiment_names=["kalm"], filter_string="tags.stage = 'imagine'", output_format="list")
    assert run.data.metrics["levels.rephrase.match_rate"] == imagined["levels"]["rephrase"]["match_rate"]
