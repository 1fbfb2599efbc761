"""The `train` stage: offline RL on real (+ imagined) episodes, one DVC matrix entry per variant x algo.

    python cli.py train --variant baseline --algo cql [--params params.yaml]

``baseline`` trains on data/offline/episodes.parquet only; ``kalm`` adds data/imagined/{rephrase,easy,hard}.parquet
(mixed per ``train.mix``). Each of the ``train.seeds`` seeds gives one policy in
``models/policies/<variant>-<algo>/seed<k>/`` (safetensors + JSON), one learning curve in
``plots/train/<variant>-<algo>/seed<k>.csv``; the stage writes ``metrics/train/<variant>-<algo>.json``.
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
from kalm.tracking import log_artifact, log_metrics, set_tags, stage_run

STAGE = "train"
log = logging.getLogger(__name__)
MEAN_Q_SAMPLE = 1024


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
    import d3rlpy
    import torch

    from kalm.rl.algos import create_algo, make_config, save_policy
    from kalm.rl.dataset import STATE_DIM, build_buffer
    from kalm.rl.encoder import GoalEncoder
    from kalm.rl.logger import MLflowAdapterFactory

    cfg = params.train
    torch.set_num_threads(cfg.threads)
    quiet_d3rlpy()
    start = time.perf_counter()
    encoder = GoalEncoder(cfg.encoder)
    embeddings = encoder.table([e.instruction for e in [*real, *imagined]])
    log_metrics({"encode_seconds": time.perf_counter() - start})
    mix = cfg.mix if variant == "kalm" else "uniform"
    buffer = build_buffer(real, imagined, embeddings, mix=mix, imagined_share=cfg.imagined_share)
    obs_dim = STATE_DIM + encoder.dim
    probe = buffer.batch_from_indices(
        seed_stream(params.seed, "train.q_sample").integers(buffer.transition_count, size=MEAN_Q_SAMPLE)
    )
    probe_actions = probe.actions.ravel().astype(np.int64)

    def mean_q(algo: Any, _dataset: Any) -> float:
        return float(np.mean(algo.predict_value(probe.observations, probe_actions)))

    evaluators = {"mean_q": mean_q} if algo_name != "bc" else None
    policy_out.mkdir(parents=True)
    curves_out.mkdir(parents=True)
    per_seed: dict[str, dict[str, float]] = {}
    hp = algo_params(params, algo_name)
    for k in range(cfg.seeds):
        seed = policy_seed(params.seed, k)
        d3rlpy.seed(seed)
        algo = create_algo(make_config(algo_name, hp, tuple(cfg.hidden_units)), obs_dim)
        factory = MLflowAdapterFactory(prefix=f"seed{k}.", log_to_mlflow=log_to_mlflow)
        t0 = time.perf_counter()
        algo.fit(
            buffer,
            n_steps=cfg.steps,
            n_steps_per_epoch=cfg.steps_per_epoch,
            experiment_name=f"{variant}-{algo_name}-seed{k}",
            with_timestamp=False,
            logger_adapter=factory,
            show_progress=True,
            evaluators=evaluators,
        )
        seconds = time.perf_counter() - t0
        steps_done = cfg.steps // cfg.steps_per_epoch * cfg.steps_per_epoch
        folder = policy_out / f"seed{k}"
        folder.mkdir()
        save_policy(
            algo,
            folder,
            {
                "variant": variant,
                "algo": algo_name,
                "seed_index": k,
                "seed": seed,
                "steps": steps_done,
                "encoder": cfg.encoder,
                "embedding_dim": encoder.dim,
                "state_dim": STATE_DIM,
            },
        )
        rows = factory.adapter.rows if factory.adapter else []
        write_curve(curves_out / f"seed{k}.csv", rows)
        final = {key: round(v, 6) for key, v in rows[-1].items() if key not in ("epoch", "step")} if rows else {}
        per_seed[f"seed{k}"] = final
        # Timings go to MLflow only: the metrics JSON is reproduced exactly by a re-run.
        log_metrics({f"seed{k}.seconds": seconds, f"seed{k}.updates_per_s": steps_done / seconds})
        log.info("train %s-%s seed%d: %s", variant, algo_name, k, per_seed[f"seed{k}"])
    keys = sorted({key for m in per_seed.values() for key in m})
    return {
        "policy": paths.policy_name(variant, algo_name),
        "episodes": {"real": len(real), "imagined": len(imagined)},
        "transitions": {"real": sum(e.length for e in real), "imagined": sum(e.length for e in imagined)},
        "instructions": len(embeddings),
        "steps": cfg.steps // cfg.steps_per_epoch * cfg.steps_per_epoch,
        "mean": {key: round(float(np.mean([m[key] for m in per_seed.values()])), 6) for key in keys},
        "seeds": per_seed,
    }


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
            metrics = train_policies(params, variant, algo, real, imagined, policy_tmp, curves_tmp)
            write_json(paths.train_metrics(variant, algo), metrics)
        log_metrics({k: v for k, v in metrics.items() if k != "seeds"})
        log_artifact(paths.train_curves(variant, algo), artifact_path="curves")
    log.info("train %s: %s", name, metrics["mean"])
    return metrics
