"""Grounding curves: configurations trained for the same steps in one run, held-out diagnostics at checkpoints.

    python benchmarks/ground_curves.py --steps 300 --every 100 \
        --config words --config table:ground.action_interface=table \
        --config fourier:ground.state_features=fourier

Each ``--config name[:key=value,...]`` overrides params (dotted keys of the ``llm`` / ``ground`` sections) and runs the
`ground` stage's own code: `split_episodes`, `episode_samples` + `make_batches` (the stage's seeds), the model of
`ModelSpec.from_params` and the TRL trainer of `kalm.llm.train`, stopped after ``--steps`` batches. At step 0 and
every ``--every`` steps it prints the teacher-forced held-out diagnostics of metrics/ground.json (action accuracy,
named-ball rate, explanation colour / direction words) and the dynamics MSE against copying the state, on the
stage's held-out split. Nothing is written outside a temporary folder; nothing is logged to MLflow. This is how the
`ground` defaults were chosen (README, "Grounding").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import TrainerCallback, set_seed

from kalm import config, paths
from kalm.config import Params, load_params
from kalm.data import read_episodes
from kalm.llm import diagnostics as diag
from kalm.llm.batches import episode_samples, make_batches
from kalm.llm.device import resolve_bf16, resolve_device
from kalm.llm.model import ModelSpec, build_trainable, sample_builder
from kalm.llm.train import TrainSettings, train
from kalm.seeds import seed_stream
from kalm.stages.ground import split_episodes

os.environ.setdefault("TQDM_DISABLE", "1")
COLUMNS = ("action_accuracy", "named_ball_rate", "explanation_colour_accuracy", "explanation_direction_accuracy")


def with_overrides(params: Params, overrides: dict[str, str]) -> Params:
    """``config.with_overrides`` with the values read as YAML; its error as the script's one-line exit."""
    try:
        return config.with_overrides(params, {k: yaml.safe_load(v) for k, v in overrides.items()}, "--config")
    except config.ConfigError as err:
        raise SystemExit(str(err)) from None


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in rest.split(",") if pair)


class Checkpoints(TrainerCallback):
    """Evaluates the held-out diagnostics at step 0 and every ``every`` steps; stops after ``steps``."""

    def __init__(self, evaluate, every: int, steps: int):
        self.evaluate, self.every, self.steps = evaluate, every, steps
        self.rows: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.rows.append(self.evaluate(model, 0))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= self.steps:
            self.rows.append(self.evaluate(model, state.global_step))
        if state.global_step >= self.steps:
            control.should_training_stop = True
        return control


def curve(params: Params, episodes, base: Path, steps: int, every: int) -> list[dict]:
    """Train one configuration for ``steps`` batches; the diagnostics rows at its checkpoints."""
    cfg = params.ground
    device = resolve_device(params.llm.device)
    bf16 = resolve_bf16(cfg.precision, device)
    train_eps, held = split_episodes(episodes, cfg.heldout_fraction, params.seed)
    train_eps = train_eps[: cfg.episodes] if cfg.episodes else train_eps
    successful = [e for e in held if e.success][: cfg.diagnostic_episodes]
    transitions = diag.held_out_transitions(
        held, 4 * cfg.diagnostic_episodes, seed_stream(params.seed, "ground.diagnostics")
    )
    set_seed(params.seed)
    dtype = torch.bfloat16 if bf16 and cfg.finetune == "lora" else torch.float32
    lm, tokenizer = build_trainable(ModelSpec.from_params(params, str(base)), dtype, params.seed, train_eps)
    builder = sample_builder(tokenizer, lm)
    rng = seed_stream(params.seed, "ground.samples")
    samples = [s for _ in range(cfg.epochs) for e in train_eps for s in episode_samples(builder, e, rng)]
    batches = make_batches(samples, cfg.batch_size, tokenizer.pad_token_id, rng)
    if len(batches) < steps:
        raise SystemExit(f"only {len(batches)} batches for --steps {steps}: raise ground.epochs or ground.episodes")
    clock = time.monotonic()

    def evaluate(model, step: int) -> dict:
        model = model or lm
        was_training = model.training
        model.eval()
        autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            row = diag.teacher_forced_metrics(model, builder, tokenizer, successful)
            dyn = diag.dynamics_metrics(model, builder, tokenizer.pad_token_id, *transitions)
        model.train(was_training)
        row.update(step=step, seconds=time.monotonic() - clock)
        row["dynamics_vs_copy"] = dyn["dynamics_mse"] / dyn["dynamics_mse_copy_baseline"]
        print(format_row("", row), flush=True)
        return row

    checkpoints = Checkpoints(evaluate, every, steps)
    with tempfile.TemporaryDirectory(prefix="kalm-curves-") as scratch:
        settings = TrainSettings.from_params(params, Path(scratch), bf16, use_cpu=device == "cpu")
        train(lm, tokenizer, batches[:steps], settings, callbacks=[checkpoints])
    return checkpoints.rows


def format_row(name: str, row: dict) -> str:
    cells = [f"{row[c]:.3f}" if row.get(c) is not None else "-" for c in (*COLUMNS, "dynamics_vs_copy")]
    return f"| {name} | {row['step']} | " + " | ".join(cells) + f" | {row['seconds']:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--base", type=Path, default=paths.BASE_MODEL)
    parser.add_argument("--episodes", type=Path, default=paths.OFFLINE_EPISODES)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--config", action="append", default=[], help="name[:key=value,...] (repeatable)")
    args = parser.parse_args()
    params = load_params(args.params)
    episodes = read_episodes(args.episodes, made_by="collect")
    results = {}
    for text in args.config or ["default"]:
        name, overrides = parse_config(text)
        print(f"== {name}: {overrides or 'params as they are'}", flush=True)
        results[name] = curve(with_overrides(params, overrides), episodes, args.base, args.steps, args.every)
    print(f"\n{args.steps} steps, held-out diagnostics (teacher-forced); seconds since the start of each run")
    print("| config | step | action acc | named ball | expl. colour | expl. direction | dynamics / copy | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in results.items():
        for row in rows:
            print(format_row(name, row))


if __name__ == "__main__":
    main()
