"""Stepping the env with a policy: the one rollout loop of collect, evaluate, imagine's replay and rendering."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kalm.env.clevr import CLEVRRobotEnv

CHUNK = 128  # environments stepped together by ``rollout_success``


@dataclass(frozen=True)
class EvalEpisode:
    """One evaluation episode: instruction, goal spec and initial ball positions (5, 2)."""

    instruction: str
    goal: dict[str, Any]
    positions: np.ndarray


Chooser = Callable[[np.ndarray, Sequence[EvalEpisode]], np.ndarray]
"""Actions (n,) for the states (n, 10) of n evaluation episodes stepped together."""


@dataclass
class Rollout:
    """One played episode: T actions and rewards, T + 1 observations, and rendered frames when asked for."""

    observations: np.ndarray  # (T + 1, 10)
    actions: np.ndarray  # (T,) int16
    rewards: np.ndarray  # (T,) float32
    terminated: bool
    success: bool
    frames: list[np.ndarray] = field(default_factory=list)


def play(
    env: CLEVRRobotEnv,
    obs: np.ndarray,
    choose: Callable[[np.ndarray], int],
    max_actions: int | None = None,
    render: bool = False,
) -> Rollout:
    """Step ``env`` from its reset observation ``obs`` with ``choose(obs) -> action`` until the episode ends (goal
    reached, one-step goal done, or truncated) or after ``max_actions``; ``render`` keeps a frame per state."""
    observations, actions, rewards = [obs], [], []
    frames = [env.render()] if render else []
    terminated = success = False
    while max_actions is None or len(actions) < max_actions:
        action = choose(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        success = bool(info["is_success"])
        if render:
            frames.append(env.render())
        if terminated or truncated:
            break
    return Rollout(
        np.stack(observations),
        np.asarray(actions, dtype=np.int16),
        np.asarray(rewards, dtype=np.float32),
        bool(terminated),
        success,
        frames,
    )


def play_batch(
    envs: Sequence[CLEVRRobotEnv], states: np.ndarray, choose: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """``play`` for several reset envs at once, one ``choose(states, rows) -> actions`` call per step for the rows
    still running; returns success per env."""
    states = np.array(states)
    success = np.zeros(len(envs), dtype=bool)
    active = np.ones(len(envs), dtype=bool)
    while active.any():
        rows = np.flatnonzero(active)
        for i, action in zip(rows, choose(states[rows], rows), strict=True):
            states[i], _, terminated, truncated, info = envs[i].step(int(action))
            if terminated or truncated:
                active[i] = False
                success[i] = bool(info["is_success"])
    return success


def rollout_success(choose: Chooser, episodes: Sequence[EvalEpisode], max_steps: int) -> np.ndarray:
    """Success (bool per episode), stepping up to ``CHUNK`` environments with one ``choose`` call per step."""
    envs = [CLEVRRobotEnv(max_episode_steps=max_steps) for _ in range(min(CHUNK, len(episodes)))]
    success = []
    for start in range(0, len(episodes), CHUNK):
        chunk = episodes[start : start + CHUNK]
        starts = [
            env.reset(options={"goal": e.goal, "positions": e.positions})[0]
            for env, e in zip(envs, chunk, strict=False)
        ]

        def choose_rows(states: np.ndarray, rows: np.ndarray, chunk=chunk) -> np.ndarray:
            return choose(states, [chunk[i] for i in rows])

        success.append(play_batch(envs[: len(chunk)], np.stack(starts), choose_rows))
    for env in envs:
        env.close()
    return np.concatenate(success) if success else np.zeros(0, dtype=bool)


def render_states(env: CLEVRRobotEnv, states: np.ndarray, max_frames: int = 8) -> np.ndarray:
    """States (e.g. imagined ones) drawn in the real scene, up to ``max_frames`` side by side (H x (n W) x 3)."""
    picks = np.unique(np.linspace(0, len(states) - 1, min(max_frames, len(states))).round().astype(int))
    frames = []
    for t in picks:
        env.reset(options={"positions": np.clip(states[t], -0.9, 0.9).reshape(-1, 2)})
        frames.append(env.render())
    return np.concatenate(frames, axis=1)
