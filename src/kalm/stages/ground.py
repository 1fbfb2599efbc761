"""The `ground` stage: KALM's grounding SFT of the LLM on offline rollouts (four patterns), with TRL.

    python cli.py ground [--params params.yaml]
    accelerate launch --num_processes 2 cli.py ground      # several processes / GPUs; only rank 0 writes

Reads models/base/ and data/offline/episodes.parquet; writes models/grounded/ (adapter + numeric modules,
tokenizer, kalm.json), metrics/ground.json (held-out diagnostics, before and after training) and
plots/ground_loss.csv.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kalm import paths
from kalm.config import Params
from kalm.data import Episode, atomic_path, read_episodes, write_json
from kalm.seeds import seed_stream
from kalm.tracking import log_metrics, stage_run

STAGE = "ground"
log = logging.getLogger(__name__)
LOSS_COLUMNS = ("step", "loss", "state_loss", "action_loss", "token_loss", "learning_rate", "grad_norm")


def split_episodes(episodes: list[Episode], heldout_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """(train, held out), split by episode with a seeded shuffle."""
    order = seed_stream(seed, "ground.split").permutation(len(episodes))
    n_held = max(1, round(heldout_fraction * len(episodes)))
    held = {int(i) for i in order[:n_held]}
    train = [episodes[int(i)] for i in order[n_held:]]
    return train, [e for i, e in enumerate(episodes) if i in held]


def diagnostics(lm, tokenizer, builder, held: list[Episode], params: Params, bf16: bool) -> dict[str, float]:
    """The held-out diagnostics of metrics/ground.json (teacher-forced, then decoded)."""
    import torch

    from kalm.llm import diagnostics as diag

    rng = seed_stream(params.seed, "ground.diagnostics")
    successful = [e for e in held if e.success][: params.ground.diagnostic_episodes]
    states, actions, nxt = diag.held_out_transitions(held, 4 * params.ground.diagnostic_episodes, rng)
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    clock = time.monotonic()
    with autocast:
        out = diag.teacher_forced_metrics(lm, builder, tokenizer, successful)
        out.update(diag.dynamics_metrics(lm, builder, tokenizer.pad_token_id, states, actions, nxt))
        seconds = {"teacher_forced": time.monotonic() - clock}
        out["explanation_accuracy"], texts = diag.explanation_accuracy(lm, builder, tokenizer, successful)
        seconds["explanation"] = time.monotonic() - clock - sum(seconds.values())
        out["generation_match_rate"], out["generation_mean_length"] = diag.generation_match_rate(
            lm, builder, tokenizer.pad_token_id, successful, params.env.max_episode_steps
        )
        seconds["generation"] = time.monotonic() - clock - sum(seconds.values())
    lm.train(was_training)
    log.info("diagnostics: %s; seconds %s; explanations (first 3): %s", out, seconds, texts[:3])
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


def write_loss_curve(rows: list[dict[str, float]], path: Path) -> None:
    """The training loss curve for `dvc plots`."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in LOSS_COLUMNS})


def run(params: Params) -> dict[str, Any]:
    """Fine-tune the base model on the offline episodes; write the grounded model, metrics and loss curve."""
    import torch
    from accelerate import PartialState
    from transformers import set_seed

    from kalm.llm.batches import episode_samples, make_batches
    from kalm.llm.device import resolve_bf16, resolve_device
    from kalm.llm.model import ModelSpec, build_trainable, sample_builder, save_grounded
    from kalm.llm.train import TrainSettings, train

    cfg = params.ground
    device = resolve_device(params.llm.device)
    state = PartialState(cpu=device == "cpu")  # under `accelerate launch`: rank 0 alone tracks and writes
    main = state.is_main_process
    log.info("ground: process %d of %d (%s)", state.process_index + 1, state.num_processes, state.distributed_type)
    bf16 = resolve_bf16(cfg.precision, device)
    episodes = read_episodes(paths.OFFLINE_EPISODES, made_by="collect")
    if not (paths.BASE_MODEL / "config.json").is_file():
        raise FileNotFoundError(f"{paths.BASE_MODEL}: missing (made by `python cli.py base_model`)")
    train_eps, held = split_episodes(episodes, cfg.heldout_fraction, params.seed)
    if cfg.episodes:
        train_eps = train_eps[: cfg.episodes]

    set_seed(params.seed)
    spec = ModelSpec.from_params(params, str(paths.BASE_MODEL))
    # LoRA keeps the frozen base in bf16 where bf16 is native (fastest on CPU); full fine-tuning keeps fp32 masters.
    dtype = torch.bfloat16 if bf16 and cfg.finetune == "lora" else torch.float32
    lm, tokenizer = build_trainable(spec, dtype, params.seed, train_eps)
    lm.to(device)
    builder = sample_builder(tokenizer)
    rng = seed_stream(params.seed, "ground.samples")
    samples = [s for _ in range(cfg.epochs) for e in train_eps for s in episode_samples(builder, e, rng)]
    batches = make_batches(samples, cfg.batch_size, tokenizer.pad_token_id, rng)

    run_ctx = stage_run(STAGE, params, sections=("llm", "ground")) if main else contextlib.nullcontext()
    with run_ctx:
        metrics: dict[str, Any] = {
            "train_episodes": len(train_eps),
            "heldout_episodes": len(held),
            "samples": len(samples),
            "steps": len(batches),
        }
        if main:
            before = diagnostics(lm, tokenizer, builder, held, params, bf16)
            metrics["untrained"] = {k: v for k, v in before.items() if k != "dynamics_mse_copy_baseline"}
        start = time.monotonic()

        def on_log(row: dict[str, float]) -> None:
            log_metrics({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))

        with tempfile.TemporaryDirectory(prefix="kalm-trainer-") as scratch:
            settings = TrainSettings.from_params(params, Path(scratch), bf16, use_cpu=device == "cpu")
            trainer, recorder = train(lm, tokenizer, batches, settings, on_log=on_log if main else None)
        if not main:
            return metrics
        train_seconds = time.monotonic() - start
        lm = trainer.model
        metrics.update(diagnostics(lm, tokenizer, builder, held, params, bf16))
        metrics["steps_done"] = int(trainer.state.global_step)
        metrics["final_loss"] = (
            round(float(np.mean([r["loss"] for r in recorder.rows[-5:]])), 5) if recorder.rows else None
        )
        with atomic_path(paths.GROUNDED_MODEL) as tmp:
            extra = {"backbone": params.llm.backbone, "bf16": bf16, "seed": params.seed}
            save_grounded(lm, tokenizer, tmp, spec, extra)
        write_loss_curve(recorder.rows, paths.GROUND_LOSS)
        write_json(paths.metrics_file(STAGE), metrics)
        log_metrics(metrics)
        samples_done = len(samples) * metrics["steps_done"] / max(len(batches), 1)
        log_metrics({"train_seconds": train_seconds, "samples_per_second": samples_done / train_seconds})
    log.info("ground: %s", metrics)
    return metrics
