"""The `collect` stage: roll out the scripted behaviour policy on the 80 training goals.

    python cli.py collect [--params params.yaml]

Writes ``data/offline/episodes.parquet`` (every episode, successful or not, with all 54 training phrasings of its
goal and one sampled instruction) and ``metrics/collect.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
from tqdm import tqdm

from kalm import paths
from kalm.config import Params
from kalm.data import Episode, write_episodes, write_json
from kalm.env import CLEVRRobotEnv
from kalm.env.rollout import play
from kalm.seeds import seeds_of
from kalm.tasks import DIRECTIONS, RelationGoal, parse_goal, training_goals, training_instructions
from kalm.tasks.behaviour import behaviour_action
from kalm.tracking import log_metrics, stage_run

STAGE = "collect"
log = logging.getLogger(__name__)


def episode_seeds(seed: int, n: int) -> list[int]:
    """Independent per-episode seeds derived from the one params seed."""
    return seeds_of(seed, "collect.episodes", n)


def rollout(
    env: CLEVRRobotEnv,
    goal: RelationGoal,
    seed: int,
    epsilon: float,
    episode_id: int,
    instructions: list[str],
    policy: str = "legible",
) -> Episode:
    """One behaviour-policy episode from a scene seeded by ``seed`` in which ``goal`` does not hold yet."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed, options={"goal": goal.to_spec()})
    while goal.holds(obs):  # the original samples only goals that are false at reset
        obs, _ = env.reset(options={"goal": goal.to_spec()})
    played = play(env, obs, lambda o: behaviour_action(o, goal, rng, epsilon, policy))
    return Episode(
        episode_id=episode_id,
        level="train",
        source="real",
        goal=goal.to_json(),
        instruction=instructions[int(rng.integers(len(instructions)))],
        instructions=instructions,
        observations=played.observations,
        actions=played.actions,
        rewards=played.rewards,
        success=played.success,
        terminated=played.terminated,
        seed=seed,
    )


def collect_episodes(params: Params, progress: bool = True) -> list[Episode]:
    """Roll out ``collect.episodes`` episodes, cycling through the 80 training goals in a fixed order."""
    goals = training_goals()
    phrasings = {goal: training_instructions(goal) for goal in goals}
    env = CLEVRRobotEnv(max_episode_steps=params.env.max_episode_steps)
    seeds = episode_seeds(params.seed, params.collect.episodes)
    episodes = []
    for i, seed in enumerate(tqdm(seeds, desc="collect", unit="ep", disable=not progress or None)):
        goal = goals[i % len(goals)]
        episodes.append(rollout(env, goal, seed, params.collect.epsilon, i, phrasings[goal], params.collect.policy))
    env.close()
    return episodes


def summarise(episodes: list[Episode]) -> dict[str, Any]:
    """Episodes, success rate, mean length and per-direction counts."""
    directions = [parse_goal(e.goal).direction for e in episodes]
    per_direction: dict[str, dict[str, float]] = {}
    counts = Counter(directions)
    for direction in DIRECTIONS:
        wins = [e.success for e, d in zip(episodes, directions, strict=True) if d == direction]
        per_direction[direction] = {
            "episodes": counts[direction],
            "success_rate": round(float(np.mean(wins)), 4) if wins else 0.0,
        }
    return {
        "episodes": len(episodes),
        "transitions": int(sum(e.length for e in episodes)),
        "success_rate": round(float(np.mean([e.success for e in episodes])), 4),
        "mean_length": round(float(np.mean([e.length for e in episodes])), 3),
        "per_direction": per_direction,
    }


def run(params: Params, progress: bool = True) -> dict[str, Any]:
    """Collect the offline dataset and write it with its metrics; returns the metrics."""
    with stage_run(STAGE, params, sections=("env", "collect")):
        episodes = collect_episodes(params, progress=progress)
        metrics = summarise(episodes)
        write_episodes(paths.OFFLINE_EPISODES, episodes)
        write_json(paths.metrics_file(STAGE), metrics)
        log_metrics(metrics)
    log.info("collect: %d episodes, success rate %.3f", metrics["episodes"], metrics["success_rate"])
    return metrics
