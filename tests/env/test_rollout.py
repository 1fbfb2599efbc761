"""kalm.env.rollout: the one loop that steps the env with a policy (collect, evaluate, imagine's replay, strips)."""

from __future__ import annotations

import numpy as np

from kalm.env import CLEVRRobotEnv
from kalm.env.rollout import play, play_batch, render_states
from kalm.tasks import RelationGoal
from kalm.tasks.behaviour import legible_action

GOAL = RelationGoal("red", "blue", "left")
# Red far right of blue: the goal does not hold at the start and the legible policy reaches it in a few pushes.
START = np.array([[0.4, 0.2], [-0.1, 0.2], [0.4, 0.5], [-0.4, -0.1], [0.4, -0.1]])


def _reset(env: CLEVRRobotEnv) -> np.ndarray:
    return env.reset(options={"goal": GOAL.to_spec(), "positions": START})[0]


def test_play_reaches_the_goal_and_records_the_episode() -> None:
    env = CLEVRRobotEnv(max_episode_steps=50)
    rollout = play(env, _reset(env), lambda obs: legible_action(obs, GOAL))
    assert rollout.success and rollout.terminated
    assert 1 <= len(rollout.actions) < 50 and rollout.actions.dtype == np.int16
    assert rollout.observations.shape == (len(rollout.actions) + 1, 10)
    assert GOAL.holds(rollout.observations[-1]) and not GOAL.holds(rollout.observations[0])
    assert rollout.rewards[-1] == rollout.rewards.max() and not rollout.frames
    env.close()


def test_play_stops_after_max_actions_and_after_truncation() -> None:
    env = CLEVRRobotEnv(max_episode_steps=5)
    away = 0 * 8 + 0  # push red right, away from where the goal wants it: never succeeds
    capped = play(env, _reset(env), lambda obs: away, max_actions=3)
    assert len(capped.actions) == 3 and not capped.success and not capped.terminated
    assert len(play(env, _reset(env), lambda obs: away, max_actions=0).actions) == 0
    truncated = play(env, _reset(env), lambda obs: away)
    assert len(truncated.actions) == 5 and not truncated.success
    env.close()


def test_play_batch_matches_play_episode_by_episode() -> None:
    """Stepped together with one policy call per step, each env ends as it does alone."""
    policies = [lambda obs: legible_action(obs, GOAL), lambda obs: 0]  # one that succeeds, one that never does
    envs = [CLEVRRobotEnv(max_episode_steps=20) for _ in policies]
    alone = [play(env, _reset(env), policy).success for env, policy in zip(envs, policies, strict=True)]
    starts = np.stack([_reset(env) for env in envs])
    together = play_batch(
        envs, starts, lambda states, rows: [policies[r](s) for s, r in zip(states, rows, strict=True)]
    )
    assert list(together) == alone == [True, False]
    for env in envs:
        env.close()


def test_render_states_draws_each_picked_state() -> None:
    env = CLEVRRobotEnv(render_mode="rgb_array", width=32, height=24)
    strip = render_states(env, np.stack([START.reshape(-1)] * 12), max_frames=4)
    assert strip.shape == (24, 4 * 32, 3) and strip.dtype == np.uint8 and strip.std() > 0
    env.close()
