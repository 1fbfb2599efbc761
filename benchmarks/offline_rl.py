"""What the offline data teaches: behaviour policies and offline-RL settings, measured in one run.

    python benchmarks/offline_rl.py policies [--policy legible --policy lookahead] [--episodes 3200 ...] [--algo bc]
    python benchmarks/offline_rl.py settings --set cql.lr=1e-3,cql.batch_size=100,steps=10000 [--set ...]

``policies`` collects ``--episodes`` episodes with each behaviour policy (the `collect` stage's code and seeds),
keeps 10 % of them out (by episode), trains the pipeline's policy on the rest (the `train` stage's code, 1 seed,
``train.*`` from the params) and prints, per policy and data size: the data's own success (with its epsilon), the
policy's greedy success on the evaluation's train level (the `behaviour` row of metrics/eval.json), the learner's
action accuracy on the held-out episodes (against the recorded actions, epsilon steps included) and the learner's
success on the train, rephrase and easy levels (the `evaluate` stage's episodes and code).

``settings`` trains on the default data (`collect.policy`, `collect.episodes`) once per ``--set`` (overrides of the
``train`` section: ``steps``, ``bc.beta``, ``cql.lr``, ...) and prints the same columns, so hyper-parameters are
compared at equal data in one run. Nothing is written outside a temporary folder; nothing is logged to MLflow.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from kalm import config
from kalm.config import Params, load_params
from kalm.data import Episode
from kalm.rl.algos import greedy_actions, load_policy
from kalm.rl.dataset import goal_observations
from kalm.stages import collect, evaluate, train
from kalm.stages.ground import split_episodes

LEVELS = ("train", "rephrase", "easy")
os.environ.setdefault("TQDM_DISABLE", "1")  # d3rlpy's per-epoch bars would bury the table


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """``config.with_overrides``, its error as the script's one-line exit."""
    try:
        return config.with_overrides(params, overrides, "--set")
    except config.ConfigError as err:
        raise SystemExit(str(err)) from None


def number(text: str) -> Any:
    """``1e-3`` -> 0.001, ``100`` -> 100 (YAML 1.1 reads ``1e-3`` as a string), anything else as YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def heldout_accuracy(policy: Any, episodes: list[Episode], embeddings: dict[str, np.ndarray]) -> tuple[float, float]:
    """Shares of the held-out episodes' recorded actions whose action, and whose ball, the greedy policy matches."""
    predicted = np.concatenate(
        [
            greedy_actions(policy, goal_observations(e.observations[: e.length], embeddings[e.instruction]))
            for e in episodes
        ]
    )
    recorded = np.concatenate([np.asarray(e.actions, dtype=np.int64) for e in episodes])
    return float((predicted == recorded).mean()), float((predicted // 8 == recorded // 8).mean())


def measure(params: Params, algo: str, episodes: list[Episode], levels: dict, embedder: evaluate.Embedder) -> dict:
    """Train one policy on 90 % of ``episodes`` and measure it (see the module docstring)."""
    fit, held = split_episodes(episodes, 0.1, params.seed)
    variant = "baseline"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train.train_policies(
            params, variant, algo, fit, [], Path(tmp) / "policy", Path(tmp) / "curves", log_to_mlflow=False
        )
        seconds = time.perf_counter() - t0
        policy, meta = load_policy(Path(tmp) / "policy" / "seed0")
    texts = [e.instruction for e in held] + [e.instruction for eps in levels.values() for e in eps]
    embeddings = embedder.table(meta, texts, Path(tmp) / "policy" / "seed0")
    choose = evaluate.policy_chooser(policy, embeddings)
    accuracy, ball_accuracy = heldout_accuracy(policy, held, embeddings)
    row = {"heldout_acc": accuracy, "heldout_ball": ball_accuracy, "train_s": seconds}
    for level in LEVELS:
        row[level] = float(evaluate.rollout_success(choose, levels[level], params.env.max_episode_steps).mean())
    return row


def print_row(label: str, row: dict[str, float]) -> None:
    print(f"| {label} | " + " | ".join(f"{v:.3f}" if v < 10 else f"{v:.0f}" for v in row.values()) + " |", flush=True)


def policies(args: argparse.Namespace, params: Params) -> None:
    levels = evaluate.level_episodes(params)
    embedder = evaluate.Embedder()
    header = [
        "data success",
        "greedy success",
        "mean length",
        "collect s",
        "heldout acc",
        "heldout ball",
        "train s",
        *LEVELS,
    ]
    print(f"| policy, episodes, {args.algo} | " + " | ".join(header) + " |")
    print("|" + " --- |" * (len(header) + 1))
    for name in args.policy or ["legible", "lookahead"]:
        greedy = evaluate.rollout_success(
            evaluate.behaviour_chooser(name), levels["train"], params.env.max_episode_steps
        )
        for n in args.episodes or [params.collect.episodes]:
            p = with_overrides(params, {"collect.policy": name, "collect.episodes": n})
            t0 = time.perf_counter()
            episodes = collect.collect_episodes(p, progress=False)
            row = {
                "data": float(np.mean([e.success for e in episodes])),
                "greedy": float(greedy.mean()),
                "length": float(np.mean([e.length for e in episodes])),
                "collect_s": time.perf_counter() - t0,
                **measure(p, args.algo, episodes, levels, embedder),
            }
            print_row(f"{name}, {n}, {args.algo}", row)


def settings(args: argparse.Namespace, params: Params) -> None:
    levels = evaluate.level_episodes(params)
    embedder = evaluate.Embedder()
    episodes = collect.collect_episodes(params, progress=False)
    print(
        f"data: {params.collect.policy}, {len(episodes)} episodes, success {np.mean([e.success for e in episodes]):.3f}"
    )
    print("| settings | algo | heldout acc | heldout ball | train s | " + " | ".join(LEVELS) + " |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(LEVELS))
    for text in args.set or [""]:
        overrides = {f"train.{k}": number(v) for k, v in (kv.split("=", 1) for kv in text.split(",") if kv)}
        p = with_overrides(params, overrides)
        algo = next((k.split(".")[1] for k in overrides if k.split(".")[1] in ("bc", "cql")), args.algo)
        row = measure(p, algo, episodes, levels, embedder)
        print(
            f"| {text or 'params.yaml'} | {algo} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |", flush=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("policies", "settings"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--policy", action="append", help="policies: repeatable; default: legible and lookahead")
    parser.add_argument("--episodes", type=int, action="append", help="policies: repeatable; default: params")
    parser.add_argument("--algo", default="bc", choices=("bc", "cql"))
    parser.add_argument("--set", action="append", help="settings: comma-separated train.* overrides; repeatable")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    params = with_overrides(params, {"train.seeds": 1, "train.threads": args.threads})
    (policies if args.what == "policies" else settings)(args, params)


if __name__ == "__main__":
    main()
