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
import json
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
# What the fitted heads change (metrics/ground.json keeps the SFT's own under "sft_heads").
HEAD_METRICS = ("action_accuracy", "named_ball_rate", "dynamics_mse", "generation_match_rate", "generation_mean_length",
                "policy_success")  # fmt: skip
LOSS_COLUMNS = ("step", "loss", "state_loss", "action_loss", "token_loss", "learning_rate", "grad_norm")


def split_episodes(episodes: list[Episode], heldout_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """(train, held out), split by episode with a seeded shuffle."""
    order = seed_stream(seed, "ground.split").permutation(len(episodes))
    n_held = max(1, round(heldout_fraction * len(episodes)))
    held = {int(i) for i in order[:n_held]}
    train = [episodes[int(i)] for i in order[n_held:]]
    return train, [e for i, e in enumerate(episodes) if i in held]


def diagnostics(
    lm, tokenizer, builder, held: list[Episode], params: Params, bf16: bool, explain: bool = True
) -> dict[str, float]:
    """The held-out diagnostics of metrics/ground.json (teacher-forced, then decoded); ``explain=False`` leaves out
    the decoded explanations (the heads do not change them)."""
    import torch

    from kalm.llm import diagnostics as diag
    from kalm.llm.policy import LLMPolicy

    rng = seed_stream(params.seed, "ground.diagnostics")
    successful = [e for e in held if e.success][: params.ground.diagnostic_episodes]
    transitions = diag.held_out_transitions(held, 4 * params.ground.diagnostic_episodes, rng)
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    clock = time.monotonic()
    with autocast:
        out = diag.teacher_forced_metrics(lm, builder, tokenizer, successful)
        out.update(diag.dynamics_metrics(lm, builder, tokenizer.pad_token_id, *transitions))
        seconds = {"teacher_forced": time.monotonic() - clock}
        texts: list[str] = []
        if explain:
            out["explanation_accuracy"], texts = diag.explanation_accuracy(lm, builder, tokenizer, successful)
        seconds["explanation"] = time.monotonic() - clock - sum(seconds.values())
        out["generation_match_rate"], out["generation_mean_length"] = diag.generation_match_rate(
            lm, builder, tokenizer.pad_token_id, successful, params.env.max_episode_steps
        )
        seconds["generation"] = time.monotonic() - clock - sum(seconds.values())
        out["policy_success"] = policy_success(LLMPolicy(lm, builder, tokenizer.pad_token_id), held, params)
        seconds["policy"] = time.monotonic() - clock - sum(seconds.values())
    lm.train(was_training)
    log.info("diagnostics: %s; seconds %s; explanations (first 3): %s", out, seconds, texts[:3])
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


def policy_success(choose, held: list[Episode], params: Params) -> float:
    """A policy (the LLM: ``kalm.llm.policy.LLMPolicy``) closed loop in the real env on the first
    ``ground.policy_episodes`` held-out episodes, from their recorded instruction, goal and initial scene: the share
    that reaches the goal within the step limit."""
    from kalm.env.rollout import EvalEpisode, rollout_success

    episodes = [
        EvalEpisode(e.instruction, json.loads(e.goal), e.observations[0].reshape(-1, 2))
        for e in held[: params.ground.policy_episodes]
    ]
    return float(rollout_success(choose, episodes, params.env.max_episode_steps).mean())


def write_loss_curve(rows: list[dict[str, float]], path: Path) -> None:
    """The training loss curve for `dvc plots`."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in LOSS_COLUMNS})


def run(params: Params) -> dict[str, Any]:
    """Fine-tune the base model on the offline episodes; write the grounded model, metrics and loss curve."""
    from kalm.llm.model import sample_builder

    device, bf16, main = processes(params)
    train_all, held = training_split(params)
    train_eps = train_all[: params.ground.episodes] if params.ground.episodes else train_all
    spec, lm, tokenizer = build_model(params, train_eps, device, bf16)
    builder = sample_builder(tokenizer, lm)
    samples, batches = training_batches(params, builder, train_eps, tokenizer.pad_token_id)
    metrics: dict[str, Any] = {
        "train_episodes": len(train_eps),
        "heldout_episodes": len(held),
        "samples": len(samples),
        "steps": len(batches),
    }
    if not main:  # under `accelerate launch` the other ranks train beside rank 0 and write nothing
        fine_tune(lm, tokenizer, batches, params, device, bf16, on_log=None)
        return metrics
    with stage_run(STAGE, params, sections=("llm", "ground")):
        before = diagnostics(lm, tokenizer, builder, held, params, bf16)
        metrics["untrained"] = {k: v for k, v in before.items() if k != "dynamics_mse_copy_baseline"}
        start = time.monotonic()
        trainer, recorder = fine_tune(lm, tokenizer, batches, params, device, bf16, on_log=log_step)
        train_seconds = time.monotonic() - start
        metrics.update(diagnostics(trainer.model, tokenizer, builder, held, params, bf16))
        if params.ground.heads == "mlp":  # the SFT's own heads stay on record; the fitted ones replace them
            metrics["sft_heads"] = {k: metrics[k] for k in HEAD_METRICS}
            metrics["heads"] = fit_heads(trainer.model, builder, tokenizer.pad_token_id, train_all, held, params, bf16)
            metrics.update(diagnostics(trainer.model, tokenizer, builder, held, params, bf16, explain=False))
        metrics["steps_done"] = int(trainer.state.global_step)
        metrics["final_loss"] = (
            round(float(np.mean([r["loss"] for r in recorder.rows[-5:]])), 5) if recorder.rows else None
        )
        save_outputs(trainer.model, tokenizer, spec, recorder.rows, metrics, params, bf16)
        samples_done = len(samples) * metrics["steps_done"] / max(len(batches), 1)
        log_metrics({"train_seconds": train_seconds, "samples_per_second": samples_done / train_seconds})
    log.info("ground: %s", metrics)
    return metrics


def processes(params: Params) -> tuple[str, bool, bool]:
    """(device, bf16, whether this is the main process); under `accelerate launch` rank 0 alone tracks and writes."""
    from accelerate import PartialState

    from kalm.llm.device import resolve_bf16, resolve_device

    device = resolve_device(params.llm.device)
    state = PartialState(cpu=device == "cpu")
    log.info("ground: process %d of %d (%s)", state.process_index + 1, state.num_processes, state.distributed_type)
    return device, resolve_bf16(params.ground.precision, device), state.is_main_process


def training_split(params: Params) -> tuple[list[Episode], list[Episode]]:
    """The training and the held-out episodes of the offline data (the SFT takes the first ``ground.episodes``)."""
    episodes = read_episodes(paths.OFFLINE_EPISODES, made_by="collect")
    if not (paths.BASE_MODEL / "config.json").is_file():
        raise FileNotFoundError(f"{paths.BASE_MODEL}: missing (made by `python cli.py base_model`)")
    return split_episodes(episodes, params.ground.heldout_fraction, params.seed)


def fit_heads(lm, builder, pad_id: int, train_all: list[Episode], held: list[Episode], params: Params, bf16: bool):
    """Fit ``ground.heads: mlp`` on the frozen LM and attach them; returns the fit's figures.

    The action head learns from the hidden states of ``ground.head_episodes`` training episodes after the SFT's
    (one random phrasing each), run once through the LM; the world model from every training transition. Held-out
    losses before and after on the held-out split (its first 64 episodes for the action head)."""
    import contextlib

    import torch

    from kalm.llm import heads as fitted

    cfg = params.ground
    rng = seed_stream(params.seed, "ground.heads")
    rest = train_all[cfg.episodes :] if 0 < cfg.episodes < len(train_all) else train_all
    pool = rest[: cfg.head_episodes]
    held_pool = held[:64]
    device = next(lm.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    lm.eval()
    clock = time.monotonic()

    with autocast:
        phrasings = [str(rng.choice(e.instructions)) for e in pool]
        action_data = fitted.transitions_with_hidden(lm, builder, pad_id, pool, phrasings)
        action_held = fitted.transitions_with_hidden(lm, builder, pad_id, held_pool, [e.instruction for e in held_pool])
    extract_seconds = time.monotonic() - clock
    world = fitted.episode_transitions([e.observations for e in train_all], [e.actions for e in train_all])
    world_held = fitted.episode_transitions([e.observations for e in held], [e.actions for e in held])
    torch.manual_seed(params.seed)
    heads = fitted.FittedHeads(lm.config.hidden_size, cfg.head_units)
    out = {"action_episodes": len(pool), "action_transitions": len(action_data), "state_transitions": len(world),
           "action_loss_before": fitted.action_loss(heads, action_held),
           "state_loss_before": fitted.state_loss(heads, world_held)}  # fmt: skip
    seeds = rng.integers(2**31, size=2)
    fitted.fit(heads, "action", action_data, cfg.head_steps, int(seeds[0]))
    fitted.fit(heads, "state", world, cfg.world_steps, int(seeds[1]))
    out.update(action_loss=fitted.action_loss(heads, action_held), state_loss=fitted.state_loss(heads, world_held))
    fitted.attach(lm, heads.eval())
    log_metrics({"heads.extract_seconds": extract_seconds, "heads.fit_seconds": time.monotonic() - clock})
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


def build_model(params: Params, train_eps: list[Episode], device: str, bf16: bool):
    """(spec, model to fine-tune on ``device``, tokenizer), seeded by ``params.seed``."""
    import torch
    from transformers import set_seed

    from kalm.llm.model import ModelSpec, build_trainable

    set_seed(params.seed)
    spec = ModelSpec.from_params(params, str(paths.BASE_MODEL))
    # LoRA keeps the frozen base in bf16 where bf16 is native (fastest on CPU); full fine-tuning keeps fp32 masters.
    dtype = torch.bfloat16 if bf16 and params.ground.finetune == "lora" else torch.float32
    lm, tokenizer = build_trainable(spec, dtype, params.seed, train_eps)
    return spec, lm.to(device), tokenizer


def training_batches(params: Params, builder, train_eps: list[Episode], pad_id: int) -> tuple[list, list]:
    """Every epoch's samples (phrasings and transitions re-drawn) and their mixed-pattern batches."""
    from kalm.llm.batches import episode_samples, make_batches

    rng = seed_stream(params.seed, "ground.samples")
    patterns = params.ground.patterns
    samples = [
        s for _ in range(params.ground.epochs) for e in train_eps for s in episode_samples(builder, e, rng, patterns)
    ]
    return samples, make_batches(samples, params.ground.batch_size, pad_id, rng)


def log_step(row: dict[str, float]) -> None:
    log_metrics({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))


def fine_tune(lm, tokenizer, batches: list, params: Params, device: str, bf16: bool, on_log):
    """TRL training over ``batches``; returns (trainer, loss recorder)."""
    from kalm.llm.train import TrainSettings, train

    with tempfile.TemporaryDirectory(prefix="kalm-trainer-") as scratch:
        settings = TrainSettings.from_params(params, Path(scratch), bf16, use_cpu=device == "cpu")
        return train(lm, tokenizer, batches, settings, on_log=on_log)


def save_outputs(
    lm, tokenizer, spec, rows: list[dict[str, float]], metrics: dict[str, Any], params: Params, bf16: bool
):
    """The grounded model, the loss curve and the metrics, each written whole or not at all; metrics to MLflow."""
    from kalm.llm.model import save_grounded

    with atomic_path(paths.GROUNDED_MODEL) as tmp:
        save_grounded(lm, tokenizer, tmp, spec, {"backbone": params.llm.backbone, "bf16": bf16, "seed": params.seed})
    write_loss_curve(rows, paths.GROUND_LOSS)
    write_json(paths.metrics_file(STAGE), metrics)
    log_metrics(metrics)
