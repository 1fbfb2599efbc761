"""Batched, KV-cached greedy decoding with the grounded model: rollouts, explanations, next states.

Prompts of different lengths are left-padded; position ids follow the attention mask so padding is invisible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from kalm.llm.batches import collate
from kalm.llm.model import backbone_of, embed, numeric_of
from kalm.llm.numeric import denormalise, normalise
from kalm.llm.prompts import ACTION, STATE, TEXT, Sample, SampleBuilder


def _left_pad(samples: Sequence[Sample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    batch = collate(samples, pad_id)
    lengths = batch["attention_mask"].sum(1)
    width = batch["attention_mask"].shape[1]
    for name, value in batch.items():
        rolled = torch.stack(
            [torch.roll(v, shifts=int(width - n), dims=0) for v, n in zip(value, lengths, strict=True)]
        )
        batch[name] = rolled
    return {k: v.to(device) for k, v in batch.items()}


class Decoder:
    """Holds the KV cache of a batch and appends one position per call."""

    def __init__(self, lm, batch: dict[str, torch.Tensor]):
        from transformers import DynamicCache

        self.lm = lm
        self.backbone = backbone_of(lm)
        self.numeric = numeric_of(lm)
        self.mask = batch["attention_mask"]
        self.cache = DynamicCache()
        positions = (self.mask.cumsum(1) - 1).clamp(min=0)
        self.next_position = positions[:, -1:] + 1
        self.hidden = self._run(embed(lm, batch), positions)

    def _run(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.backbone(
            inputs_embeds=embeds,
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
        )
        return out.last_hidden_state[:, -1]

    def append(self, kind: int, tokens=None, states=None, actions=None) -> torch.Tensor:
        """Feed one text token, state or action per row; returns the new last hidden states (B, H)."""
        n = self.mask.shape[0]
        device = self.mask.device
        tokens = tokens if tokens is not None else torch.zeros(n, dtype=torch.long, device=device)
        token_emb = self.lm.get_input_embeddings()(tokens[:, None])
        kinds = torch.full((n, 1), kind, dtype=torch.long, device=device)
        states = states if states is not None else torch.zeros(n, self.numeric.state_in.in_features, device=device)
        actions = actions if actions is not None else torch.zeros(n, dtype=torch.long, device=device)
        embeds = self.numeric.embed(token_emb, kinds, states[:, None], actions[:, None])
        self.mask = torch.cat([self.mask, torch.ones(n, 1, dtype=self.mask.dtype, device=device)], dim=1)
        self.hidden = self._run(embeds, self.next_position)
        self.next_position = self.next_position + 1
        return self.hidden


def _device(lm) -> torch.device:
    return next(lm.parameters()).device


Rollout = tuple[np.ndarray, np.ndarray, bool]
SuccessTest = Callable[[int, np.ndarray, int, np.ndarray], bool]


@torch.no_grad()
def generate_rollouts(
    lm,
    builder: SampleBuilder,
    pad_id: int,
    instructions: Sequence[str],
    initial_states: np.ndarray,
    max_steps: int | Sequence[int],
    is_success: SuccessTest | None = None,
) -> list[Rollout]:
    """Greedy imaginary rollouts from real initial states, batched with one KV cache: a_t = argmax of the action
    head, s_t+1 from the state head. Each step appends two positions (the action, then the state) to every row.

    A row stops at its first success (``is_success(row, prev_state, action, next_state)`` on raw states) or at its
    own ``max_steps`` (one int for all rows, or one per row: 1 for easy goals); the batch stops when all have.
    Returns per row (states (T+1, 10) raw, actions (T,), success).
    """
    n = len(instructions)
    limits = np.broadcast_to(np.asarray(max_steps, dtype=np.int64), (n,))
    samples = [builder.generation_prompt(i, normalise(s)) for i, s in zip(instructions, initial_states, strict=True)]
    decoder = Decoder(lm, _left_pad(samples, pad_id, _device(lm)))
    numeric = numeric_of(lm)
    states = [[np.asarray(s, dtype=np.float32)] for s in initial_states]
    actions: list[list[int]] = [[] for _ in range(n)]
    done = limits <= 0
    success = np.zeros(n, dtype=bool)
    hidden = decoder.hidden
    current = torch.from_numpy(normalise(np.asarray(initial_states))).to(hidden.device)
    for step in range(int(limits.max(initial=0))):
        if done.all():
            break
        action = numeric.action_out(hidden.float()).argmax(-1)
        hidden = decoder.append(ACTION, actions=action)
        next_norm = numeric.predict_state(hidden, current)
        next_raw = denormalise(next_norm.cpu().numpy())
        for row in np.flatnonzero(~done):
            a = int(action[row])
            actions[row].append(a)
            states[row].append(next_raw[row])
            if is_success is not None and is_success(int(row), states[row][-2], a, next_raw[row]):
                success[row] = done[row] = True
            elif step + 1 >= limits[row]:
                done[row] = True
        if done.all():
            break
        current = next_norm
        hidden = decoder.append(STATE, states=next_norm)
    return [
        (np.stack(s), np.asarray(a, dtype=np.int16), bool(ok))
        for s, a, ok in zip(states, actions, success, strict=True)
    ]


@torch.no_grad()
def generate_rollout_uncached(
    lm,
    builder: SampleBuilder,
    instruction: str,
    initial_state: np.ndarray,
    max_steps: int,
    is_success: Callable[[np.ndarray, int, np.ndarray], bool] | None = None,
) -> Rollout:
    """The naive loop: one rollout, the whole sequence re-run for every new element (no KV cache, batch 1).

    The reference the cached, batched ``generate_rollouts`` must agree with, and the baseline of its benchmark.
    """
    from kalm.llm.model import hidden_states

    device = _device(lm)
    numeric = numeric_of(lm)
    states = [normalise(np.asarray(initial_state))]
    raw = [np.asarray(initial_state, dtype=np.float32)]
    actions: list[int] = []
    ok = False

    def last_hidden() -> torch.Tensor:
        sample = builder.generation_context(instruction, np.stack(states), np.asarray(actions, dtype=np.int64))
        batch = {k: v.to(device) for k, v in collate([sample], 0).items()}
        return hidden_states(lm, batch)[:, -1]

    for _ in range(max_steps):
        action = int(numeric.action_out(last_hidden().float()).argmax(-1))
        actions.append(action)
        anchor = torch.from_numpy(states[-1][None]).to(device)
        next_norm = numeric.predict_state(last_hidden(), anchor).cpu().numpy()[0]
        states.append(next_norm)
        raw.append(denormalise(next_norm))
        if is_success is not None and is_success(raw[-2], action, raw[-1]):
            ok = True
            break
    return np.stack(raw), np.asarray(actions, dtype=np.int16), ok


@torch.no_grad()
def explain(
    lm, builder: SampleBuilder, tokenizer, rollouts: Sequence[tuple[np.ndarray, np.ndarray]], max_new_tokens: int = 32
) -> list[str]:
    """Greedy-decode the instruction that explains each rollout (states raw (T+1, 10), actions (T,))."""
    samples = [builder.explanation(None, normalise(s), np.asarray(a, dtype=np.int64)) for s, a in rollouts]
    decoder = Decoder(lm, _left_pad(samples, tokenizer.pad_token_id, _device(lm)))
    head = lm.get_output_embeddings()
    banned = [builder.state_id, builder.action_id]  # slot tokens are never text
    n = len(samples)
    out: list[list[int]] = [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    hidden = decoder.hidden
    for _ in range(max_new_tokens):
        logits = head(hidden).float()
        logits[:, banned] = float("-inf")
        token = logits.argmax(-1)
        for row in np.flatnonzero(~done):
            t = int(token[row])
            if t == builder.eos_id:
                done[row] = True
            else:
                out[row].append(t)
        if done.all():
            break
        hidden = decoder.append(TEXT, tokens=token)
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]


@torch.no_grad()
def predict_next_states(
    lm, builder: SampleBuilder, pad_id: int, states: np.ndarray, actions: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """The dynamics pattern's prediction of s_t+1 (raw) for each (s_t, a_t)."""
    from kalm.llm.model import hidden_states

    preds = []
    norm = normalise(states)
    for start in range(0, len(states), batch_size):
        samples = [
            builder.dynamics(s, int(a), np.zeros_like(s))
            for s, a in zip(norm[start : start + batch_size], actions[start : start + batch_size], strict=True)
        ]
        batch = {k: v.to(_device(lm)) for k, v in collate(samples, pad_id).items()}
        hidden = hidden_states(lm, batch)
        last = batch["attention_mask"].sum(1) - 1
        h = hidden[torch.arange(len(samples)), last]
        anchor = torch.from_numpy(norm[start : start + batch_size]).to(h.device)
        preds.append(denormalise(numeric_of(lm).predict_state(h, anchor).cpu().numpy()))
    return np.concatenate(preds)
