"""How much could KALM gain if imagination were right? Trains the same policies on three data sets and evaluates them
on the pipeline's evaluation episodes, in one run:

- ``baseline``: the offline episodes only (as the `train` stage's baseline);
- ``kalm-llm``: offline + the grounded LLM's imagined rollouts (data/imagined/, as the `train` stage's kalm);
- ``kalm-oracle``: offline + "perfect imagination" for the same tasks and initial states: the rephrase rollouts are
  re-made by the scripted behaviour policy in the real env (the policy that collected the offline data), the easy
  rollouts get an action that satisfies the easy goal, stepped in the real env. The hard level has no scripted
  solver, so the LLM's hard rollouts are kept.

    python benchmarks/oracle_imagination.py [--algo bc --algo cql] [--seeds 1] [--params params.yaml]

Needs the `collect` and `imagine` outputs (`dvc repro imagine`). Uses ``train.*`` from the params (steps, mix,
hyper-parameters) and ``evaluate.*`` for the episodes; writes nothing outside a temporary folder and logs nothing to
MLflow. Prints success per level and novel_mean per data set, and the ratios to the baseline. This is a diagnostic
of the RL side, not a KALM result: the oracle uses the simulator, which imagination must not.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from kalm import config, paths
from kalm.config import load_params
from kalm.data import Episode, read_episodes
from kalm.env import CLEVRRobotEnv
from kalm.env.rollout import play
from kalm.seeds import seed_stream
from kalm.stages import evaluate, imagine, train
from kalm.tasks import parse_goal
from kalm.tasks.behaviour import behaviour_action
from kalm.tasks.world import NOVEL_LEVELS


def oracle_episode(
    env: CLEVRRobotEnv, imagined: Episode, rng: np.random.Generator, epsilon: float, policy: str
) -> Episode:
    """The real env's episode for an imagined rollout's task and initial state, acted by the scripted policy."""
    spec = json.loads(imagined.goal)
    goal = parse_goal(spec)
    obs, _ = env.reset(options={"goal": spec, "positions": imagined.observations[0].reshape(5, 2)})

    def choose(obs: np.ndarray) -> int:
        if goal.ends_after_one_step:  # the easy test reads the action only: any action that satisfies it
            return int(rng.choice([a for a in range(40) if goal.is_success(obs, a, obs)]))
        return behaviour_action(obs, goal, rng, epsilon, policy)

    played = play(env, obs, choose)
    return Episode(
        episode_id=imagined.episode_id,
        level=imagined.level,
        source="oracle",
        goal=imagined.goal,
        instruction=imagined.instruction,
        observations=played.observations.astype(np.float32),
        actions=played.actions,
        rewards=played.rewards,
        success=played.success,
        terminated=played.terminated,
        seed=imagined.seed,
    )


def imagined_sets(params, every_task: bool) -> dict[str, list[Episode]]:
    """The LLM's imagined episodes and their oracle counterparts (``every_task``: the oracle acts on every task and
    start `imagine` drew, ``imagine.<level>`` of them, not only on the rollouts the filter kept)."""
    epsilon, policy, seed = params.collect.epsilon, params.collect.policy, params.seed
    llm: list[Episode] = []
    oracle: list[Episode] = []
    env = CLEVRRobotEnv(max_episode_steps=params.env.max_episode_steps)
    rng = seed_stream(seed, "benchmarks.oracle")
    for level in NOVEL_LEVELS:
        episodes = read_episodes(paths.imagined_episodes(level), made_by="imagine")
        llm.extend(episodes)
        if every_task:
            episodes = task_episodes(params, level, env)
        oracle.extend(episodes if level == "hard" else [oracle_episode(env, e, rng, epsilon, policy) for e in episodes])
    env.close()
    return {"kalm-llm": llm, "kalm-oracle": oracle}


def task_episodes(params, level: str, env: CLEVRRobotEnv) -> list[Episode]:
    """`imagine`'s tasks and initial states of a level as one-state episodes (what the oracle acts on)."""
    n = getattr(params.imagine, level)
    tasks = imagine.imagination_tasks(params, level, n)
    starts, seeds = imagine.initial_states(env, [parse_goal(spec) for _, spec in tasks], params.seed, level)
    return [
        Episode(
            episode_id=i,
            level=level,
            source="imagined",
            goal=json.dumps(spec),
            instruction=text,
            observations=start[None],
            actions=np.zeros(0, np.int16),
            rewards=np.zeros(0, np.float32),
            success=False,
            terminated=False,
            seed=seed,
        )
        for i, ((text, spec), start, seed) in enumerate(zip(tasks, starts, seeds, strict=True))
    ]


def train_and_score(params, algo, variant, real, imagined, levels, embedder, out: Path) -> dict[str, float]:
    """Mean success per level over the seeds of policies trained on ``real`` + ``imagined``."""
    train.train_policies(params, variant, algo, real, imagined, out / "policy", out / "curves", log_to_mlflow=False)
    folders = sorted((out / "policy").glob("seed*"))
    per_seed = evaluate.seed_results(folders, levels, embedder, params.env.max_episode_steps).values()
    return {level: float(np.mean([s[level] for s in per_seed])) for level in levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--algo", action="append", choices=paths.ALGOS, help="repeatable; default: train.algos")
    parser.add_argument("--seeds", type=int, default=1, help="policies per algo and data set")
    parser.add_argument("--every-task", action="store_true", help="oracle on all of imagine's tasks, not the kept")
    parser.add_argument("--per-level", action="store_true", help="one kalm policy per novel level (the paper's)")
    args = parser.parse_args()
    params = load_params(args.params)
    params = config.with_overrides(params, {"train.seeds": args.seeds}, "--seeds")
    real = read_episodes(paths.OFFLINE_EPISODES, made_by="collect")
    sets = {
        "baseline": [],
        **imagined_sets(params, args.every_task),
    }
    for name, episodes in sets.items():
        by_level = {lv: [e for e in episodes if e.level == lv] for lv in NOVEL_LEVELS}
        print(f"{name}: imagined success " + ", ".join(f"{lv} {np.mean([e.success for e in es] or [0]):.3f}"
                                                       for lv, es in by_level.items()))  # fmt: skip
    levels = evaluate.level_episodes(params)
    embedder = evaluate.Embedder()
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algo in args.algo or params.train.algos:
            for name, imagined in sets.items():
                variant = "baseline" if name == "baseline" else "kalm"
                if args.per_level and variant == "kalm":
                    # The paper's protocol: one policy per novel level on real + that level's rollouts, scored on
                    # that level; the train level by the rephrase-level policy.
                    row = {}
                    for level in NOVEL_LEVELS:
                        own = {lv: eps for lv, eps in levels.items() if evaluate.scored_by(lv) == level}
                        data = [e for e in imagined if e.level == level]
                        row |= train_and_score(
                            params, algo, variant, real, data, own, embedder, Path(tmp) / name / level
                        )
                else:
                    row = train_and_score(params, algo, variant, real, imagined, levels, embedder, Path(tmp) / name)
                row = {level: row[level] for level in levels}
                row["novel_mean"] = float(np.mean([row[level] for level in NOVEL_LEVELS]))
                table[f"{name} {algo}"] = row
                print(f"{name:>12} {algo}: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    print("\nnovel_mean relative to the baseline of the same algo:")
    for algo in args.algo or params.train.algos:
        base = table[f"baseline {algo}"]["novel_mean"]
        for name in ("kalm-llm", "kalm-oracle"):
            value = table[f"{name} {algo}"]["novel_mean"]
            print(f"  {algo} {name}: {value:.3f} / {base:.3f} = {value / base if base else float('nan'):.2f}x")


if __name__ == "__main__":
    try:
        main()
    except config.ConfigError as err:  # a bad --set / --seeds value: one line, exit 1
        raise SystemExit(str(err)) from None
