"""The `imagine` stage: the grounded LLM writes rollouts for goals the offline data never had.

    python cli.py imagine [--params params.yaml]

For each novel level (rephrase, easy, hard) it pairs the imagination split of the shipped suite with real initial
states (seeded env resets, a stream of their own) and decodes greedy rollouts, batched with one KV cache; rewards
and success come from the goal's own functions on the generated states. Writes
``data/imagined/{rephrase,easy,hard}.parquet``, ``metrics/imagine.json`` (match rate, replay success in the real
env, unrealistic transitions) and image strips of a few rollouts in ``reports/imagine/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from kalm import paths
from kalm.config import Params
from kalm.data import Episode, atomic_path, read_episodes, write_episodes, write_json
from kalm.env import CLEVRRobotEnv
from kalm.env.rollout import play, render_states
from kalm.seeds import seed_stream, seeds_of
from kalm.tasks import Goal, parse_goal, shipped_suite
from kalm.tasks.world import WALLS_HIGH, WALLS_LOW
from kalm.tracking import log_artifact, log_metrics, stage_run

STAGE = "imagine"
log = logging.getLogger(__name__)


def imagination_tasks(params: Params, level: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (instruction, goal spec) pairs from the level's imagination split: seeded shuffles of all its
    instances, concatenated, so every instance appears ``n / instances`` times give or take one."""
    imagination, _ = shipped_suite(level).split(params.goals.holdout_fraction, params.seed)
    instances = list(imagination.expand())
    rng = seed_stream(params.seed, f"imagine.tasks.{level}")
    picks: list[int] = []
    while len(picks) < n:
        picks.extend(int(i) for i in rng.permutation(len(instances)))
    return [instances[i] for i in picks[:n]]


def initial_states(env: CLEVRRobotEnv, goals: Sequence[Goal], seed: int, level: str) -> tuple[np.ndarray, list[int]]:
    """Real initial states from seeded resets (a stream no other stage uses), re-drawn while the goal already
    holds, as the original samples goals; returns (states (n, 10), reset seeds)."""
    seeds = seeds_of(seed, f"imagine.starts.{level}", len(goals))
    states = []
    for goal, reset_seed in zip(goals, seeds, strict=True):
        obs, _ = env.reset(seed=reset_seed)
        while not goal.ends_after_one_step and goal.is_success(obs, 0, obs):
            obs, _ = env.reset()
        states.append(obs)
    return np.stack(states), seeds


def label_rewards(goal: Goal, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Each generated transition's reward from the goal's reward function (float32, (T,))."""
    return np.array(
        [goal.reward(states[t], int(actions[t]), states[t + 1]) for t in range(len(actions))], dtype=np.float32
    )


def dynamics_limit(episodes: Sequence[Episode]) -> float:
    """The largest distance any ball moved in one real transition of the offline data."""
    return float(max(np.max(ball_steps(e.observations)) for e in episodes if e.length))


def ball_steps(states: np.ndarray) -> np.ndarray:
    """Per transition, per ball, the distance moved ((T, 5))."""
    balls = np.asarray(states, dtype=np.float64).reshape(len(states), -1, 2)
    return np.linalg.norm(np.diff(balls, axis=0), axis=-1)


def out_of_workbench(states: np.ndarray) -> np.ndarray:
    """Per transition, whether its next state puts a ball centre off the workbench (beyond a wall) ((T,) bool)."""
    balls = np.asarray(states[1:], dtype=np.float64).reshape(len(states) - 1, -1, 2)
    # A ball centre beyond a wall plane is off the workbench. Real scenes can start with a ball pressed into a wall
    # (inside the planes but outside the usable area), so the usable area would flag every model that copies s_0.
    return np.any((balls < WALLS_LOW) | (balls > WALLS_HIGH), axis=(1, 2))


def exceeds_dynamics(states: np.ndarray, limit: float) -> np.ndarray:
    """Per transition, whether a ball moves further than any real transition did ((T,) bool)."""
    return np.any(ball_steps(states) > limit, axis=1)


def replay_succeeds(env: CLEVRRobotEnv, goal: Goal, initial: np.ndarray, actions: np.ndarray) -> bool:
    """Whether the generated actions, replayed in the real env from the same s_0, reach the goal."""
    obs, _ = env.reset(options={"positions": np.asarray(initial).reshape(-1, 2), "goal": goal.to_spec()})
    queue = iter(actions)
    return play(env, obs, lambda _: int(next(queue)), max_actions=len(actions)).success


def imagine_level(
    lm, builder, pad_id: int, params: Params, level: str, n: int, env: CLEVRRobotEnv
) -> tuple[list[Episode], dict[str, Any]]:
    """Generate ``n`` rollouts of one level; returns the episodes (unfiltered) and facts about the tasks used."""
    from kalm.llm.generate import generate_rollouts

    if n == 0:
        return [], {"instances": 0}
    tasks = imagination_tasks(params, level, n)
    goals = [parse_goal(spec) for _, spec in tasks]
    starts, seeds = initial_states(env, goals, params.seed, level)
    limits = [1 if g.ends_after_one_step else params.env.max_episode_steps for g in goals]
    # Batches of one instruction share the whole text of their prompt, which the decoder prefills once per batch.
    order = sorted(range(n), key=lambda i: tasks[i][0])
    episodes: dict[int, Episode] = {}
    batch = params.imagine.batch_size
    for lo in tqdm(range(0, n, batch), desc=f"imagine {level}", unit="batch", leave=False):
        rows = order[lo : lo + batch]
        rollouts = generate_rollouts(
            lm,
            builder,
            pad_id,
            [tasks[i][0] for i in rows],
            starts[rows],
            [limits[i] for i in rows],
            is_success=lambda row, prev, a, nxt, rows=rows: goals[rows[row]].is_success(prev, a, nxt),
        )
        for i, (states, actions, success) in zip(rows, rollouts, strict=True):
            goal = goals[i]
            episodes[i] = Episode(
                episode_id=i,
                level=level,
                source="imagined",
                goal=goal.to_json(),
                instruction=tasks[i][0],
                instructions=[tasks[i][0]],
                observations=states.astype(np.float32),
                actions=actions.astype(np.int16),
                rewards=label_rewards(goal, states, actions),
                success=success,
                terminated=success or goal.ends_after_one_step,
                seed=seeds[i],
            )
    return [episodes[i] for i in range(n)], {"instances": len({text for text, _ in tasks})}


def level_metrics(episodes: Sequence[Episode], env: CLEVRRobotEnv, limit: float) -> dict[str, Any]:
    """match rate, replay success in the real env, and the share of unrealistic transitions (paper Table 1, 4)."""
    goals = [parse_goal(e.goal) for e in episodes]
    replays = [replay_succeeds(env, g, e.observations[0], e.actions) for g, e in zip(goals, episodes, strict=True)]
    transitions = max(sum(e.length for e in episodes), 1)
    return {
        "rollouts": len(episodes),
        "match_rate": float(np.mean([e.success for e in episodes])) if episodes else 0.0,
        "replay_success_rate": float(np.mean(replays)) if episodes else 0.0,
        "out_of_workbench_rate": sum(int(out_of_workbench(e.observations).sum()) for e in episodes) / transitions,
        "exceeds_dynamics_rate": sum(int(exceeds_dynamics(e.observations, limit).sum()) for e in episodes)
        / transitions,
        "mean_length": float(np.mean([e.length for e in episodes])) if episodes else 0.0,
    }


def kept(episodes: Sequence[Episode], how: str, limit: float) -> list[Episode]:
    """``imagine.filter``: all rollouts (``none``), those with no transition off the workbench or beyond the
    dynamics limit (``realistic``), or those whose last generated state satisfies the goal (``successful``)."""
    if how == "realistic":
        return [
            e
            for e in episodes
            if not (out_of_workbench(e.observations).any() or exceeds_dynamics(e.observations, limit).any())
        ]
    if how == "successful":
        return [e for e in episodes if e.success]
    return list(episodes)


def run(params: Params) -> dict[str, Any]:
    """Generate the imagined datasets of the three novel levels; write them, the metrics and image strips."""
    import torch
    from PIL import Image

    from kalm.llm.device import resolve_bf16, resolve_device
    from kalm.llm.model import load_grounded, sample_builder

    offline = read_episodes(paths.OFFLINE_EPISODES, made_by="collect")
    device = resolve_device(params.llm.device)
    dtype = torch.bfloat16 if resolve_bf16(params.ground.precision, device) else torch.float32
    torch.manual_seed(params.seed)
    lm, tokenizer, _ = load_grounded(paths.GROUNDED_MODEL, base_dir=paths.BASE_MODEL, dtype=dtype)
    lm.to(device)
    builder = sample_builder(tokenizer, lm)
    limit = dynamics_limit(offline)
    env = CLEVRRobotEnv(render_mode="rgb_array", max_episode_steps=params.env.max_episode_steps)
    counts = {"rephrase": params.imagine.rephrase, "easy": params.imagine.easy, "hard": params.imagine.hard}
    metrics: dict[str, Any] = {"dynamics_limit": round(limit, 5), "filter": params.imagine.filter, "levels": {}}
    strips: dict[str, np.ndarray] = {}
    with stage_run(STAGE, params, sections=("llm", "imagine")):
        for level in paths.NOVEL_LEVELS:
            clock = time.monotonic()
            episodes, info = imagine_level(lm, builder, tokenizer.pad_token_id, params, level, counts[level], env)
            seconds = time.monotonic() - clock
            # Timings go to MLflow only: the metrics JSON is reproduced exactly by a re-run.
            log_metrics({f"{level}.seconds": seconds, f"{level}.rollouts_per_second": len(episodes) / seconds})
            level_out = {**level_metrics(episodes, env, limit), **info}
            keep = kept(episodes, params.imagine.filter, limit)
            level_out["kept"] = len(keep)
            write_episodes(paths.imagined_episodes(level), keep)
            metrics["levels"][level] = {k: round(v, 5) if isinstance(v, float) else v for k, v in level_out.items()}
            for i, episode in enumerate(episodes[: params.imagine.render]):
                strips[f"{level}_{i}"] = render_states(env, episode.observations)
            log.info("imagine %s: %s", level, metrics["levels"][level])
        env.close()
        with atomic_path(paths.IMAGINE_REPORTS) as tmp:
            tmp.mkdir(parents=True)
            for name, image in strips.items():
                Image.fromarray(image).save(tmp / f"{name}.png")
        log_artifact(paths.IMAGINE_REPORTS, artifact_path="imagine")
        write_json(paths.metrics_file(STAGE), metrics)
        log_metrics(metrics)
    return metrics
