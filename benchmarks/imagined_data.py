"""How KALM should use its imagined rollouts: kalm policies trained on offline + different selections of the
imagined data, beside the baseline, in one run and on the pipeline's evaluation episodes.

    python benchmarks/imagined_data.py --set all --set successful:filter=successful \
        --set easy:levels=easy --set uniform:mix=uniform [--algo bc --algo cql]

Each ``--set name[:key=value,...]`` selects from data/imagined/ (the `imagine` stage's rollouts, which must have been
made with ``imagine.filter: none``): ``filter`` (none | realistic | successful: `imagine.kept`), ``levels``
(``+``-joined, e.g. ``easy+rephrase``), ``mix`` (balanced | uniform: ``train.mix``), ``share`` (the imagined share
of a balanced batch: ``train.imagined_share``) and ``per_level=1`` (the paper's protocol: one policy per novel level on
offline + that level's rollouts, scored on that level, the train level by the rephrase-level policy; a level with no
chosen rollouts is scored by the baseline's policies, which are the same policies) and ``count`` (a seeded random
subset of that many of each level's chosen rollouts: how a level grows with its rollouts). ``filter`` may chain tests
with ``+`` (``successful+realistic``). ``replays`` is an oracle for diagnosis only, never a filter KALM may use: it
keeps the rollouts whose generated actions, replayed in the real env from the same start, reach the goal — what
correct imagination would buy at a given count (``successful+replays`` beside ``successful`` with the same
``count``). Every set trains
``train.seeds`` policies per algorithm with the `train` stage's code and params; the baseline is trained in the same
run (``--seeds`` overrides ``train.seeds``). Prints per-level success (mean over seeds) with Wilson 95 % intervals
on the pooled episodes, on both protocols (held-out templates, and the ``_given`` instructions imagination had), and
each set's novel means against the baseline's. Nothing is written outside a temporary folder; nothing is logged to
MLflow. Outside the ``replays`` oracle only the goal's own test on generated states selects rollouts, never the real
env.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from kalm import config, paths, stats
from kalm.config import load_params
from kalm.data import read_episodes
from kalm.env import CLEVRRobotEnv
from kalm.stages import evaluate, imagine, train
from kalm.tasks import parse_goal

os.environ.setdefault("TQDM_DISABLE", "1")


def parse_set(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    options = dict(pair.split("=", 1) for pair in rest.split(",") if pair)
    unknown = set(options) - {"filter", "levels", "mix", "share", "per_level", "count"}
    if unknown:
        raise SystemExit(f"--set {name}: unknown option(s) {', '.join(sorted(unknown))}")
    return name, options


def replaying(episodes: list, max_steps: int) -> list:
    """The oracle: the rollouts whose actions reach the goal, replayed in the real env (`imagine.replay_succeeds`)."""
    env = CLEVRRobotEnv(max_episode_steps=max_steps)
    try:
        return [e for e in episodes if imagine.replay_succeeds(env, parse_goal(e.goal), e.observations[0], e.actions)]
    finally:
        env.close()


def chosen_rollouts(episodes: list, how: str, limit: float, count: int | None, seed: int, max_steps: int) -> list:
    """The rollouts that pass every ``+``-joined test of ``how`` (`imagine.kept`, or the ``replays`` oracle); with
    ``count``, a seeded random subset of that many."""
    for test in how.split("+"):
        episodes = replaying(episodes, max_steps) if test == "replays" else imagine.kept(episodes, test, limit)
    if count is not None and count < len(episodes):
        rows = np.sort(np.random.default_rng(seed).permutation(len(episodes))[:count])
        episodes = [episodes[i] for i in rows]
    return episodes


def train_and_evaluate(params, variant, algo, real, imagined, levels, embedder, out: Path) -> stats.SeedResults:
    """``{seedK: {level: success per episode}}`` of ``train.seeds`` policies trained on ``real`` + ``imagined``."""
    train.train_policies(params, variant, algo, real, imagined, out / "policy", out / "curves", log_to_mlflow=False)
    folders = sorted((out / "policy").glob("seed*"))
    return evaluate.seed_results(folders, levels, embedder, params.env.max_episode_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", action="append", default=[], help="name[:filter=..,levels=..,mix=..] (repeatable)")
    parser.add_argument("--algo", action="append", choices=paths.ALGOS, help="default: train.algos")
    parser.add_argument("--seeds", type=int, help="policies per set and algo (default: train.seeds)")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.seeds is not None:
        params = config.with_overrides(params, {"train.seeds": args.seeds}, "--seeds")
    train.quiet_d3rlpy()
    real = read_episodes(paths.OFFLINE_EPISODES, made_by="collect")
    rollouts = {lv: read_episodes(paths.imagined_episodes(lv), made_by="imagine") for lv in paths.NOVEL_LEVELS}
    limit = imagine.dynamics_limit(real)
    max_steps = params.env.max_episode_steps
    levels = evaluate.level_episodes(params)
    embedder = evaluate.Embedder()
    results = {}
    baseline_seeds: dict[str, stats.SeedResults] = {}
    with tempfile.TemporaryDirectory(prefix="kalm-imagined-") as tmp:
        for algo in args.algo or params.train.algos:
            for text in ["baseline", *args.set]:
                name, options = parse_set(text)
                chosen = options.get("levels", "+".join(paths.NOVEL_LEVELS)).split("+")
                variant = "baseline" if name == "baseline" else "kalm"
                count = int(options["count"]) if "count" in options else None
                imagined = (
                    {
                        lv: chosen_rollouts(
                            rollouts[lv], options.get("filter", "none"), limit, count, params.seed, max_steps
                        )
                        for lv in chosen
                    }
                    if variant == "kalm"
                    else {}
                )
                mixing = {
                    "train.mix": options.get("mix", params.train.mix),
                    "train.imagined_share": float(options.get("share", params.train.imagined_share)),
                }
                run_params = config.with_overrides(params, mixing, f"--set {name}")
                out = Path(tmp) / f"{name}-{algo}"
                if variant == "baseline":
                    seeds = train_and_evaluate(run_params, "baseline", algo, real, [], levels, embedder, out)
                    baseline_seeds[algo] = seeds
                elif options.get("per_level") == "1":
                    seeds = {k: dict(v) for k, v in baseline_seeds[algo].items()}
                    for lv, data in imagined.items():
                        if not data:
                            continue
                        own = {x: eps for x, eps in levels.items() if evaluate.scored_by(x) == lv}
                        scores = train_and_evaluate(run_params, "kalm", algo, real, data, own, embedder, out / lv)
                        for seed, per_level in scores.items():
                            seeds[seed].update(per_level)
                else:
                    pooled = [e for data in imagined.values() for e in data]
                    seeds = train_and_evaluate(run_params, "kalm", algo, real, pooled, levels, embedder, out)
                n_imagined = sum(len(data) for data in imagined.values())
                row = {**stats.summarise({name: seeds}, list(levels))[name], "imagined": n_imagined}
                results[f"{name} {algo}"] = row
                print(f"{name} {algo} ({n_imagined} imagined): {row}", flush=True)
    means = ("novel_mean", "novel_mean_given")
    print("\n| set | algo | imagined | " + " | ".join([*levels, *means]) + " | vs baseline (held out / given) |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in [*levels, *means]) + " | --- |")
    for key, row in results.items():
        name, algo = key.split(" ")
        base = results[f"baseline {algo}"]
        cells = [
            f"{100 * row[lv]:.1f} ({100 * row['ci95'][lv][0]:.0f}–{100 * row['ci95'][lv][1]:.0f})" for lv in levels
        ]
        gains = " / ".join(f"{100 * (row[m] - base[m]):+.1f}" for m in means)
        print(
            f"| {name} | {algo} | {row['imagined']} | "
            + " | ".join([*cells, *(f"{100 * row[m]:.1f}" for m in means)])
            + f" | {gains} |"
        )


if __name__ == "__main__":
    try:
        main()
    except config.ConfigError as err:  # a bad --set / --seeds value: one line, exit 1
        raise SystemExit(str(err)) from None
