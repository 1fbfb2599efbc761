"""The grounded model: any causal LM + KALM's numeric modules, its losses, and saving / loading.

The numeric modules live on the LM as the submodule ``kalm_numeric`` so that PEFT can train and save them
(``modules_to_save``) next to the LoRA weights. Placeholder tokens mark the state and action slots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kalm.llm.heads import HEADS_FILE, FittedHeads, attach, heads_of
from kalm.llm.numeric import NumericIO, anchor_states, latest_actions, word_vectors
from kalm.llm.prompts import ACTION_TOKEN, STATE, STATE_TOKEN, SampleBuilder

NUMERIC = "kalm_numeric"
META_FILE = "kalm.json"
NUMERIC_FILE = "numeric.safetensors"
PROMPT_VERSION = 1
STATE_LOSS_WEIGHT = 0.5
ACTION_LOSS_WEIGHT = 0.5


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild the grounded model around its base."""

    base_dir: str
    num_layers: int  # 0 = all
    finetune: str  # lora | full
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: str = "all-linear"
    residual_state: bool = True
    action_interface: str = "table"  # words | table
    state_features: str = "linear"  # linear | fourier | pairs | relations
    action_displacement: bool = False  # residual head adds each action's mean displacement
    state_slots: str = "one"  # one | balls (a position per ball)

    @classmethod
    def from_params(cls, params, base_dir: str) -> ModelSpec:
        """The spec the `ground` stage trains, from validated params."""
        cfg = params.ground
        return cls(
            base_dir=base_dir,
            num_layers=params.llm.num_layers,
            finetune=cfg.finetune,
            lora_rank=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_targets=cfg.lora_targets,
            residual_state=cfg.residual_state,
            action_interface=cfg.action_interface,
            state_features=cfg.state_features,
            action_displacement=cfg.action_displacement,
            state_slots=cfg.state_slots,
        )

    @classmethod
    def from_meta(cls, meta: dict[str, Any], base_dir: str) -> ModelSpec:
        """The spec a saved model's kalm.json records (fields it predates take their defaults)."""
        return cls(base_dir, **{f.name: meta.get(f.name, f.default) for f in fields(cls) if f.name != "base_dir"})


def backbone_of(lm: nn.Module) -> nn.Module:
    """The decoder stack (e.g. ``LlamaModel``) of a causal LM, through any PEFT wrapper."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return getattr(base, base.base_model_prefix)


def numeric_of(lm: nn.Module) -> NumericIO:
    """The numeric modules in use (PEFT's trainable copy when wrapped)."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    module = getattr(base, NUMERIC)
    if hasattr(module, "modules_to_save"):
        active = module.active_adapter
        return module.modules_to_save[active if isinstance(active, str) else active[0]]
    return module


def _truncate(lm: nn.Module, num_layers: int) -> None:
    if num_layers <= 0:
        return
    layers = backbone_of(lm).layers
    if num_layers > len(layers):
        raise ValueError(f"llm.num_layers: {num_layers} > the backbone's {len(layers)} layers")
    backbone_of(lm).layers = layers[:num_layers]
    lm.config.num_hidden_layers = num_layers
    if getattr(lm.config, "layer_types", None):
        lm.config.layer_types = lm.config.layer_types[:num_layers]


def _add_placeholders(lm: nn.Module, tokenizer: Any) -> None:
    """Add the slot tokens; their (unused) embedding rows are the mean of the others, so rebuilding is exact."""
    tokenizer.add_special_tokens({"additional_special_tokens": [STATE_TOKEN, ACTION_TOKEN]})
    old = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            weight = lm.get_input_embeddings().weight
            weight[old:] = weight[:old].mean(0, keepdim=True)
            head = lm.get_output_embeddings()
            if head is not None and head.weight.data_ptr() != weight.data_ptr():
                head.weight[old:] = head.weight[:old].mean(0, keepdim=True)


def _lora_config(spec: ModelSpec, inference: bool = False):
    from peft import LoraConfig

    targets: str | list[str] = spec.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",")]
    return LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=0.0,  # dropout > 0 costs 1.25-1.55x per step on CPU (reference/cpu-budget.md)
        target_modules=targets,
        exclude_modules=rf".*{NUMERIC}.*",
        modules_to_save=[NUMERIC],
        inference_mode=inference,
    )


def load_base(spec: ModelSpec, dtype: torch.dtype, seed: int):
    """The base LM (layers kept, placeholders added) with fresh numeric modules, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.base_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(spec.base_dir, dtype=dtype)
    _truncate(lm, spec.num_layers)
    _add_placeholders(lm, tokenizer)
    torch.manual_seed(seed)
    setattr(lm, NUMERIC, new_numeric(lm, tokenizer, spec))
    return lm, tokenizer


def new_numeric(lm: nn.Module, tokenizer: Any, spec: ModelSpec) -> NumericIO:
    """Fresh numeric modules (fp32) for ``lm``, as ``spec`` says."""
    embed_std = float(lm.get_input_embeddings().weight.detach().float().std())
    final_norm = getattr(backbone_of(lm), "norm", None)
    hidden_norm = float(final_norm.weight.detach().float().norm()) if final_norm is not None else 1.0
    needs_words = spec.action_interface == "words" or spec.state_slots == "balls"
    return NumericIO(
        lm.config.hidden_size,
        residual_state=spec.residual_state,
        embed_std=embed_std,
        action_interface=spec.action_interface,
        state_features=spec.state_features,
        word_vectors=word_vectors(lm, tokenizer) if needs_words else None,
        hidden_norm=hidden_norm,
        action_displacement=spec.action_displacement,
        state_slots=spec.state_slots,
    ).float()


def build_trainable(spec: ModelSpec, dtype: torch.dtype, seed: int, episodes=()):
    """The model to fine-tune: LoRA (numeric modules fully trained) or every weight (full). ``episodes``: the
    training rollouts the action displacement is set from (``spec.action_displacement``)."""
    lm, tokenizer = load_base(spec, dtype, seed)
    if episodes:
        numeric_of(lm).set_displacement([e.observations for e in episodes], [e.actions for e in episodes])
    if spec.finetune == "lora":
        from peft import get_peft_model

        lm = get_peft_model(lm, _lora_config(spec))
    return lm, tokenizer


def placeholder_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of the state and action slots."""
    return tokenizer.convert_tokens_to_ids(STATE_TOKEN), tokenizer.convert_tokens_to_ids(ACTION_TOKEN)


def embed(lm: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Input embeddings with the numeric slots filled in."""
    tokens = lm.get_input_embeddings()(batch["input_ids"])
    return numeric_of(lm).embed(tokens, batch["kinds"], batch["state_inputs"], batch["action_inputs"])


def hidden_states(lm: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states (B, L, H) for a right-padded batch."""
    out = backbone_of(lm)(inputs_embeds=embed(lm, batch), attention_mask=batch["attention_mask"], use_cache=False)
    return out.last_hidden_state


def sample_builder(tokenizer: Any, lm: nn.Module) -> SampleBuilder:
    """The SampleBuilder of a grounded model: its tokenizer's placeholder tokens, EOS ending answers, and its
    numeric modules' state layout (one slot per state or one per ball)."""
    state_id, action_id = placeholder_ids(tokenizer)
    numeric = numeric_of(lm)
    return SampleBuilder(
        lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
        state_id,
        action_id,
        tokenizer.eos_token_id,
        obs_dim=numeric.obs_dim,
        ball_slots=numeric.ball_slots,
    )


def compute_losses(
    lm: nn.Module, batch: dict[str, torch.Tensor], hidden: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """0.5 state MSE + 0.5 action CE + token CE (reference/kalm-method.md §4.4), each a mean over its targets.

    Returns ``loss`` and the components the batch has targets for. Heads and losses run in fp32 outside
    autocast; the LM head is applied only where a text label exists (it is 49k wide). ``hidden``: the batch's
    last hidden states when the caller already has them.
    """
    hidden = hidden_states(lm, batch) if hidden is None else hidden
    numeric = numeric_of(lm)
    parts: dict[str, torch.Tensor] = {}
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        state_mask = batch["state_mask"]
        if numeric.residual_state:
            # s_0 read from the prompt has no state before it: the head would have to output an absolute position
            # there and a change everywhere else, and the absolute targets (random scenes, unpredictable from the
            # text) swamp the changes. Rollouts always start from a real s_0, so it is not scored.
            state_mask = state_mask & (batch["kinds"] == STATE).cumsum(-1).gt(0)
        if state_mask.any():
            anchors = anchor_states(batch["kinds"], batch["state_inputs"])[state_mask]
            actions = latest_actions(batch["kinds"], batch["action_inputs"])[state_mask]
            predicted = numeric.predict_state(hidden[state_mask], anchors, actions)
            # In the head's own units (residual: RESIDUAL_SCALE), so copying scores ~1 beside the cross-entropies.
            error = F.mse_loss(predicted, batch["state_targets"][state_mask])
            parts["state_loss"] = error / numeric.state_scale**2
        action_mask = batch["action_targets"] != -100
        if action_mask.any():
            logits = numeric.action_out(hidden[action_mask].float())
            parts["action_loss"] = F.cross_entropy(logits, batch["action_targets"][action_mask])
    label_mask = batch["labels"] != -100
    if label_mask.any():
        logits = lm.get_output_embeddings()(hidden[label_mask]).float()
        parts["token_loss"] = F.cross_entropy(logits, batch["labels"][label_mask])
    weights = {"state_loss": STATE_LOSS_WEIGHT, "action_loss": ACTION_LOSS_WEIGHT, "token_loss": 1.0}
    loss = sum(weights[name] * value for name, value in parts.items())
    return {"loss": loss, **parts}


def save_grounded(lm: nn.Module, tokenizer: Any, out_dir: Path, spec: ModelSpec, extra: dict[str, Any]) -> None:
    """Write the adapter (LoRA + numeric modules) or the full model + numeric modules, tokenizer and kalm.json."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.finetune == "lora":
        # The resized embedding rows of the slot tokens are rebuilt exactly on load; no need to store the matrix.
        lm.save_pretrained(out_dir, save_embedding_layers=False)
        # PEFT writes target_modules from a set, in an order that changes with the process's hash seed; sorted, the
        # folder (and so its hash in dvc.lock) is the same on every run.
        config_path = out_dir / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config = {k: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
                  for k, v in config.items()}  # fmt: skip
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        state = {k: v for k, v in lm.state_dict().items() if not k.startswith(f"{NUMERIC}.")}
        lm.save_pretrained(out_dir, state_dict=state)
        numeric = {k: v.detach().contiguous() for k, v in numeric_of(lm).state_dict().items()}
        save_file(numeric, str(out_dir / NUMERIC_FILE))
    tokenizer.save_pretrained(out_dir)
    heads = heads_of(lm)
    if heads is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}, str(out_dir / HEADS_FILE))
        extra = {**extra, "heads": "mlp", "head_units": heads.units}
    meta = {
        "obs_dim": numeric_of(lm).obs_dim,
        "n_actions": numeric_of(lm).n_actions,
        "base_model": spec.base_dir,
        **{f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "base_dir"},
        "prompt_version": PROMPT_VERSION,
        "state_token": STATE_TOKEN,
        "action_token": ACTION_TOKEN,
        **extra,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_grounded(model_dir: str | Path, base_dir: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """Reload a grounded model for inference (LoRA merged); returns (model, tokenizer, meta).

    ``base_dir`` overrides the base folder recorded in kalm.json (a path relative to the repository root).
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: missing (made by `python cli.py ground`)")
    meta = json.loads(meta_path.read_text())
    spec = ModelSpec.from_meta(meta, str(base_dir or meta["base_model"]))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if spec.finetune == "lora":
        from peft import PeftModel

        lm, _ = load_base(spec, dtype, seed=0)
        lm = PeftModel.from_pretrained(lm, model_dir).merge_and_unload()
    else:
        lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        setattr(lm, NUMERIC, new_numeric(lm, tokenizer, spec))
        numeric_of(lm).load_state_dict(load_file(str(model_dir / NUMERIC_FILE)))
    if meta.get("heads") == "mlp":
        heads = FittedHeads(lm.config.hidden_size, meta["head_units"])
        heads.load_state_dict(load_file(str(model_dir / HEADS_FILE)))
        attach(lm, heads.eval())
    lm.eval()
    return lm, tokenizer, meta
