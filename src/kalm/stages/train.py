"""The `train` stage: offline RL on real (+ imagined) episodes, one DVC matrix entry per variant x algo.

    python cli.py train --variant baseline --algo cql [--params params.yaml]

``baseline`` trains on data/offline/episodes.parquet only; ``kalm`` adds data/imagined/{rephrase,easy,hard}.parquet
(mixed per ``train.mix``). Each of the ``train.seeds`` seeds gives one policy in
``models/policies/<variant>-<algo>/seed<k>/`` (safetensors + JSON), one learning curve in
``plots/train/<variant>-<algo>/seed<k>.csv``; the stage writes ``metrics/train/<variant>-<algo>.json``. With
``train.per_level`` (the paper's protocol) kalm trains one policy set per novel level on the offline episodes and that
level's rollouts, one folder level deeper (``models/policies/kalm-cql/easy/seed0/``).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from kalm import paths
from kalm.config import Params
from kalm.data import Episode, atomic_path, read_episodes, write_json
from kalm.seeds import seed_stream, seeds_of
from kalm.tasks.world import OBS_DIM
from kalm.tracking import log_artifact, log_metrics, set_tags, stage_run

STAGE = "train"
log = logging.getLogger(__name__)
MEAN_Q_SAMPLE = 1024
Q_ALGOS = ("cql", "bcq")  # their learning curves carry the mean Q of the data's actions


def policy_seed(seed: int, k: int) -> int:
    """The seed of policy ``k``, derived from the one params seed."""
    return seeds_of(seed, "train.policy", 1, k)[0]


def algo_params(params: Params, algo: str) -> dict[str, Any]:
    """The hyper-parameters of ``algo`` from ``train.<algo>``."""
    return getattr(params.train, algo).model_dump()


def load_episodes(variant: str) -> tuple[list[Episode], list[Episode]]:
    """(real, imagined) episodes of a variant; imagined is empty for ``baseline``."""
    real = read_episodes(paths.OFFLINE_EPISODES, made_by="collect")
    imagined: list[Episode] = []
    if variant == "kalm":
        for level in paths.NOVEL_LEVELS:
            imagined.extend(read_episodes(paths.imagined_episodes(level), made_by="imagine"))
    return real, imagined


def quiet_d3rlpy() -> None:
    """d3rlpy prints structlog lines per epoch and a warning per ``fit`` on a built model; keep errors only."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    """A learning curve as CSV (step, epoch, then the algorithm's metrics)."""
    columns = ["step", "epoch", *sorted({k for r in rows for k in r} - {"step", "epoch"})]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


def train_policies(
    params: Params,
    variant: str,
    algo_name: str,
    real: list[Episode],
    imagined: list[Episode],
    policy_out: Path,
    curves_out: Path,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """Train ``train.seeds`` policies into ``policy_out/seed<k>/`` and their curves into ``curves_out/``."""
    import torch

    torch.set_num_threads(params.train.threads)
    quiet_d3rlpy()
    buffer, encoder_meta, n_instructions = goal_buffer(params, variant, real, imagined)
    evaluators = {"mean_q": mean_q_evaluator(buffer, params.seed)} if algo_name in Q_ALGOS else None
    policy_out.mkdir(parents=True)
    curves_out.mkdir(parents=True)
    per_seed: dict[str, dict[str, float]] = {}
    for k in range(params.train.seeds):
        rows = train_one(params, variant, algo_name, k, buffer, encoder_meta, evaluators, policy_out, log_to_mlflow)
        write_curve(curves_out / f"seed{k}.csv", rows)
        per_seed[f"seed{k}"] = (
            {key: round(v, 6) for key, v in rows[-1].items() if key not in ("epoch", "step")} if rows else {}
        )
        log.info("train %s-%s seed%d: %s", variant, algo_name, k, per_seed[f"seed{k}"])
    keys = sorted({key for m in per_seed.values() for key in m})
    return {
        "policy": paths.policy_name(variant, algo_name),
        "episodes": {"real": len(real), "imagined": len(imagined)},
        "transitions": {"real": sum(e.length for e in real), "imagined": sum(e.length for e in imagined)},
        "instructions": n_instructions,
        "steps": steps_done(params),
        "mean": {key: round(float(np.mean([m[key] for m in per_seed.values()])), 6) for key in keys},
        "seeds": per_seed,
    }


def steps_done(params: Params) -> int:
    """The gradient steps a policy gets: whole epochs of ``train.steps_per_epoch``."""
    return params.train.steps // params.train.steps_per_epoch * params.train.steps_per_epoch


def goal_buffer(params: Params, variant: str, real: list[Episode], imagined: list[Episode]):
    """(replay buffer of goal-conditioned transitions, what the policies record of the goal encoder, distinct
    instructions)."""
    from kalm.llm.reader import goal_encoder
    from kalm.rl.dataset import build_buffer

    start = time.perf_counter()
    encoder = goal_encoder(params.train.encoder)
    embeddings = encoder.table([e.instruction for e in [*real, *imagined]])
    log_metrics({"encode_seconds": time.perf_counter() - start})
    mix = params.train.mix if variant == "kalm" else "uniform"
    buffer = build_buffer(real, imagined, embeddings, mix=mix, imagined_share=params.train.imagined_share)
    return buffer, encoder.meta(), len(embeddings)


def mean_q_evaluator(buffer: Any, seed: int):
    """A d3rlpy evaluator: the mean Q of the data's actions on a fixed sample of its transitions."""
    probe = buffer.batch_from_indices(
        seed_stream(seed, "train.q_sample").integers(buffer.transition_count, size=MEAN_Q_SAMPLE)
    )
    probe_actions = probe.actions.ravel().astype(np.int64)

    def mean_q(algo: Any, _dataset: Any) -> float:
        return float(np.mean(algo.predict_value(probe.observations, probe_actions)))

    return mean_q


def train_one(
    params: Params,
    variant: str,
    algo_name: str,
    k: int,
    buffer: Any,
    encoder_meta: dict[str, Any],
    evaluators: dict | None,
    policy_out: Path,
    log_to_mlflow: bool,
) -> list[dict[str, float]]:
    """Fit policy ``k`` and save it in ``policy_out/seed<k>/``; returns its learning curve's rows."""
    import d3rlpy

    from kalm.rl.algos import create_algo, make_config, save_policy
    from kalm.rl.logger import MLflowAdapterFactory

    cfg = params.train
    seed = policy_seed(params.seed, k)
    d3rlpy.seed(seed)
    hp = algo_params(params, algo_name)
    config = make_config(algo_name, hp, tuple(cfg.hidden_units), params.env.max_episode_steps)
    algo = create_algo(config, OBS_DIM + encoder_meta["embedding_dim"])
    factory = MLflowAdapterFactory(prefix=f"seed{k}.", log_to_mlflow=log_to_mlflow)
    start = time.perf_counter()
    algo.fit(
        buffer,
        n_steps=cfg.steps,
        n_steps_per_epoch=cfg.steps_per_epoch,
        experiment_name=f"{variant}-{algo_name}-seed{k}",
        with_timestamp=False,
        logger_adapter=factory,
        show_progress=True,
        **({"evaluators": evaluators} if evaluators else {}),  # a transformer's fit takes none
    )
    seconds = time.perf_counter() - start
    meta = {"variant": variant, "algo": algo_name, "seed_index": k, "seed": seed, "steps": steps_done(params)}
    meta |= {**encoder_meta, "state_dim": OBS_DIM}  # grounded: the model's fingerprint, checked by evaluate
    (policy_out / f"seed{k}").mkdir()
    save_policy(algo, policy_out / f"seed{k}", meta)
    # Timings go to MLflow only: the metrics JSON is reproduced exactly by a re-run.
    log_metrics({f"seed{k}.seconds": seconds, f"seed{k}.updates_per_s": steps_done(params) / seconds})
    return factory.adapter.rows if factory.adapter else []


def train_per_level(
    params: Params, algo: str, real: list[Episode], imagined: list[Episode], policy_out: Path, curves_out: Path
) -> dict[str, Any]:
    """kalm with ``train.per_level`` (the paper's protocol): one set of policies per novel level on the offline
    episodes and that level's rollouts, in ``policy_out/<level>/seed<k>/``. A level with fewer than
    ``train.min_imagined`` kept rollouts gets none: `evaluate` scores it by the baseline's policies, which are what
    training on the offline episodes alone gives."""
    metrics: dict[str, Any] = {"policy": paths.policy_name("kalm", algo), "per_level": True}
    policy_out.mkdir()
    curves_out.mkdir()
    for level in paths.NOVEL_LEVELS:
        own = [e for e in imagined if e.level == level]
        if len(own) < params.train.min_imagined:  # a few rollouts are memorised, not learnt (RESULTS.md)
            metrics[level] = {"episodes": {"real": len(real), "imagined": len(own)}, "trained": False}
            continue
        metrics[level] = train_policies(params, "kalm", algo, real, own, policy_out / level, curves_out / level)
    return metrics


def without_seeds(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without their per-seed entries (for MLflow and the log)."""
    return {k: without_seeds(v) if isinstance(v, dict) else v for k, v in metrics.items() if k != "seeds"}


def run(params: Params, variant: str, algo: str) -> dict[str, Any]:
    """Train every seed of one variant x algo and write policies, learning curves and metrics."""
    if variant not in paths.VARIANTS:
        raise ValueError(f"variant: {variant!r} is not one of {', '.join(paths.VARIANTS)}")
    if algo not in paths.ALGOS:
        raise ValueError(f"algo: {algo!r} is not one of {', '.join(paths.ALGOS)}")
    real, imagined = load_episodes(variant)
    name = paths.policy_name(variant, algo)
    with stage_run(f"{STAGE}@{name}", params, sections=("train",)):
        set_tags({"variant": variant, "algo": algo})
        with (
            atomic_path(paths.policy_dir(variant, algo)) as policy_tmp,
            atomic_path(paths.train_curves(variant, algo)) as curves_tmp,
        ):
            if variant == "kalm" and params.train.per_level:
                metrics = train_per_level(params, algo, real, imagined, policy_tmp, curves_tmp)
            else:
                metrics = train_policies(params, variant, algo, real, imagined, policy_tmp, curves_tmp)
            write_json(paths.train_metrics(variant, algo), metrics)
        log_metrics(without_seeds(metrics))
        log_artifact(paths.train_curves(variant, algo), artifact_path="curves")
    log.info("train %s: %s", name, without_seeds(metrics))
    return metrics
