"""Grounding SFT with TRL: an ``SFTTrainer`` whose ``compute_loss`` runs KALM's numeric forward.

TRL's own ``compute_loss`` calls the backbone directly (a fused LM-head patch) and would silently bypass the
numeric inputs (`reference/trl-numeric-sft.md`), so it is overridden. Batches come pre-built (one pattern each,
patterns mixed); the trainer shuffles their order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from kalm.llm.model import NUMERIC, compute_losses

HEADS = (".state_out.", ".action_out.")


def install_kalm_forward(model) -> None:
    """Route ``model(kalm_batch=batch)`` to KALM's losses, so the loss runs inside the model's forward.

    Going through ``forward`` (rather than calling the backbone from the trainer) is what lets DDP / FSDP wrappers
    under ``accelerate launch`` prepare their gradient synchronisation. Other calls reach the original forward.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    original = base.forward

    def forward(*args, kalm_batch=None, **kwargs):
        if kalm_batch is not None:
            return compute_losses(model, kalm_batch)
        return original(*args, **kwargs)

    base.forward = forward


class KalmSFTTrainer(SFTTrainer):
    """SFTTrainer with KALM's losses (state MSE, action CE, token CE) over the numeric-slot forward."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses = model(kalm_batch=inputs)
        sums = self.__dict__.setdefault("_component_sums", {})
        for name, value in losses.items():
            if name != "loss":
                total, count = sums.get(name, (0.0, 0))
                sums[name] = (total + float(value.detach()), count + 1)
        return (losses["loss"], None) if return_outputs else losses["loss"]

    def create_optimizer(self, model=None):
        """AdamW with their own learning rates for the numeric input maps and the heads (both start from scratch).

        The zero-initialised heads need a far larger step than the LM: at the LM's rate they barely leave zero in
        a CPU-sized run, although a linear probe on the untrained LM's hidden states already halves the dynamics
        error of the copy baseline (README, "Grounding").
        """
        if self.optimizer is None:
            numeric_lr = getattr(self, "kalm_numeric_lr", None) or self.args.learning_rate
            head_lr = getattr(self, "kalm_head_lr", None) or numeric_lr
            trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            is_head = lambda n: NUMERIC in n and any(h in n for h in HEADS)  # noqa: E731
            groups = [
                {"params": [p for n, p in trainable if NUMERIC not in n], "lr": self.args.learning_rate},
                {"params": [p for n, p in trainable if NUMERIC in n and not is_head(n)], "lr": numeric_lr},
                {"params": [p for n, p in trainable if is_head(n)], "lr": head_lr},
            ]
            groups = [g for g in groups if g["params"]]
            for group in groups:
                group["weight_decay"] = self.args.weight_decay
            self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate)
        return self.optimizer

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add each loss component's mean over the logging window (over the batches that had it)."""
        if "loss" in logs:
            sums = self.__dict__.pop("_component_sums", {})
            logs = {**logs, **{name: total / count for name, (total, count) in sums.items()}}
        super().log(logs, *args, **kwargs)


@dataclass
class TrainSettings:
    """What the trainer needs from params."""

    output_dir: Path
    lr: float
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    bf16: bool
    use_cpu: bool
    seed: int
    logging_steps: int
    numeric_lr: float | None = None
    head_lr: float | None = None

    @classmethod
    def from_params(cls, params, output_dir: Path, bf16: bool, use_cpu: bool) -> TrainSettings:
        """The settings of the `ground` stage's SFT, from validated params."""
        cfg = params.ground
        return cls(
            output_dir=output_dir,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            warmup_ratio=cfg.warmup_ratio,
            max_grad_norm=cfg.max_grad_norm,
            bf16=bf16,
            use_cpu=use_cpu,
            seed=params.seed,
            logging_steps=cfg.logging_steps,
            numeric_lr=cfg.numeric_lr,
            head_lr=cfg.head_lr,
        )


class LossRecorder(TrainerCallback):
    """Keeps the logged loss curve (for plots/ground_loss.csv and MLflow). Training runs its fixed number of
    steps on every machine: no wall-clock stop, so the metrics depend on params and machine kind only."""

    def __init__(self, on_log=None):
        self.rows: list[dict[str, float]] = []
        self.log_fn = on_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            row = {"step": state.global_step, **{k: float(v) for k, v in logs.items() if isinstance(v, int | float)}}
            self.rows.append(row)
            if self.log_fn is not None and state.is_world_process_zero:
                self.log_fn(row)


def sft_config(settings: TrainSettings, n_batches: int) -> SFTConfig:
    """An SFTConfig for pre-built batches (batch size 1 item = one batch), built from our params only."""
    return SFTConfig(
        output_dir=str(settings.output_dir),
        per_device_train_batch_size=1,
        num_train_epochs=1,
        learning_rate=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=math.ceil(settings.warmup_ratio * n_batches),
        lr_scheduler_type="linear",
        max_grad_norm=settings.max_grad_norm,
        bf16=settings.bf16,
        use_cpu=settings.use_cpu,
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=settings.logging_steps,
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        activation_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        ddp_find_unused_parameters=True,  # e.g. the action head gets no gradient from a dynamics batch
    )


def train(model, tokenizer, batches: list[dict[str, torch.Tensor]], settings: TrainSettings, on_log=None, callbacks=()):
    """Run the SFT over every batch once; returns (trainer, recorder)."""
    recorder = LossRecorder(on_log=on_log)
    # SFTTrainer wants a `datasets.Dataset`: it holds batch indices and the collator hands out the batch.
    trainer = KalmSFTTrainer(
        model=model,
        args=sft_config(settings, len(batches)),
        train_dataset=Dataset.from_dict({"batch": list(range(len(batches)))}),
        data_collator=lambda items: batches[items[0]["batch"]],
        processing_class=tokenizer,
        callbacks=[recorder, *callbacks],
    )
    trainer.kalm_numeric_lr = settings.numeric_lr
    trainer.kalm_head_lr = settings.head_lr
    install_kalm_forward(model)
    trainer.train()
    return trainer, recorder
