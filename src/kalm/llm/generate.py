"""Batched, KV-cached greedy decoding with the grounded model: rollouts, explanations, next states.

The text prefix shared by a batch's prompts runs once; the rest of the prompts are left-padded after it; position ids
follow the attention mask so padding is invisible. Rows that finish leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from kalm.llm.batches import collate
from kalm.llm.heads import heads_of
from kalm.llm.model import backbone_of, embed, numeric_of
from kalm.llm.numeric import denormalise, normalise
from kalm.llm.prompts import ACTION, STATE, TEXT, Sample, SampleBuilder, state_kinds


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


def _slice(sample: Sample, lo: int, hi: int) -> Sample:
    """Positions [lo, hi) of a sample."""
    fields = {name: getattr(sample, name)[lo:hi] for name in Sample.__dataclass_fields__ if name != "pattern"}
    return Sample(pattern=sample.pattern, **fields)


def shared_prefix(samples: Sequence[Sample]) -> int:
    """Length of the text prefix all samples share (at least one position of each left over)."""
    limit = min(len(s) for s in samples) - 1
    first = samples[0]
    n = 0
    while n < limit and first.kinds[n] == TEXT and all(s.input_ids[n] == first.input_ids[n] for s in samples):
        n += 1
    return n


class Decoder:
    """Holds the KV cache of a batch and appends one position per call.

    The text prefix every row shares (the pattern's instruction text) is run once and its cache repeated over the
    rows; the rest of each prompt follows it, padded on the left of that rest. Positions follow the attention mask,
    so the padding in the middle is invisible. Rows can be dropped when they finish (``keep``).
    """

    def __init__(self, lm, samples: Sequence[Sample], pad_id: int):
        from transformers import DynamicCache

        self.lm = lm
        self.backbone = backbone_of(lm)
        self.numeric = numeric_of(lm)
        self.cache = DynamicCache()
        device = _device(lm)
        n_prefix = shared_prefix(samples)
        if n_prefix:
            prefix = {k: v.to(device) for k, v in collate([_slice(samples[0], 0, n_prefix)], pad_id).items()}
            self.mask = prefix["attention_mask"]
            self._run(embed(lm, prefix), torch.arange(n_prefix, device=device)[None])
            self.cache.batch_repeat_interleave(len(samples))
            samples = [_slice(s, n_prefix, len(s)) for s in samples]
        rest = _left_pad(samples, pad_id, device)
        self.mask = torch.cat([torch.ones(len(samples), n_prefix, dtype=torch.long, device=device),
                               rest["attention_mask"]], dim=1)  # fmt: skip
        positions = (self.mask.cumsum(1) - 1).clamp(min=0)[:, n_prefix:]
        self.next_position = positions[:, -1:] + 1
        self.hidden = self._run(embed(lm, rest), positions)

    def _run(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.backbone(
            inputs_embeds=embeds,
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
        )
        return out.last_hidden_state[:, -1]

    def keep(self, rows: Sequence[int]) -> None:
        """Go on with these rows only (finished rows cost nothing more)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.next_position, self.hidden = self.mask[index], self.next_position[index], self.hidden[index]

    def append(self, kind: int, tokens=None, states=None, actions=None) -> torch.Tensor:
        """Feed one text token, action or state per row (a state is one position per ball with ball slots);
        returns the new last hidden states (B, H)."""
        n = self.mask.shape[0]
        device = self.mask.device
        width = self.numeric.obs_dim // 2 if kind == STATE and self.numeric.ball_slots else 1
        kinds = torch.tensor(state_kinds(width) if kind == STATE else [kind], device=device).expand(n, width)
        tokens = tokens if tokens is not None else torch.zeros(n, dtype=torch.long, device=device)
        token_emb = self.lm.get_input_embeddings()(tokens[:, None].expand(n, width))
        states = states if states is not None else torch.zeros(n, self.numeric.obs_dim, device=device)
        actions = actions if actions is not None else torch.zeros(n, dtype=torch.long, device=device)
        states, actions = states[:, None].expand(n, width, -1), actions[:, None].expand(n, width)
        embeds = self.numeric.embed(token_emb, kinds, states, actions)
        self.mask = torch.cat([self.mask, torch.ones(n, width, dtype=self.mask.dtype, device=device)], dim=1)
        self.hidden = self._run(embeds, self.next_position + torch.arange(width, device=device))
        self.next_position = self.next_position + width
        return self.hidden


def _device(lm) -> torch.device:
    return next(lm.parameters()).device


def choose_actions(lm, hidden: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Greedy a_t from the hidden states of s_t's slot (B, H) and s_t (B, 10, normalised): the fitted action head
    where the model has one (``ground.heads: mlp``), else the SFT's own."""
    heads = heads_of(lm)
    if heads is not None:
        return heads.action_logits(hidden, states.to(hidden.device)).argmax(-1)
    return numeric_of(lm).action_out(hidden.float()).argmax(-1)


def next_states(lm, hidden, states, actions, prev_actions, prev_states) -> torch.Tensor:
    """s_t+1 (normalised) from the hidden state of a_t's slot, s_t, a_t and the previous step (a_t-1: -1 none):
    the fitted world model where the model has one, else the SFT's state head."""
    heads = heads_of(lm)
    if heads is not None:
        return heads.next_state(states, actions, prev_actions, prev_states)
    return numeric_of(lm).predict_state(hidden, states, actions)


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
    decoder = Decoder(lm, samples, pad_id)
    states = [[np.asarray(s, dtype=np.float32)] for s in initial_states]
    actions: list[list[int]] = [[] for _ in range(n)]
    done = limits <= 0
    success = np.zeros(n, dtype=bool)
    current = torch.from_numpy(normalise(np.asarray(initial_states))).to(decoder.hidden.device)
    previous, prev_action = current, torch.full((n,), -1, dtype=torch.long, device=current.device)
    active = np.arange(n)  # the original row of each decoder row
    for step in range(int(limits.max(initial=0))):
        if done[active].any():  # finished rows leave the batch: the rest decode faster
            still = np.flatnonzero(~done[active])
            if not len(still):
                break
            decoder.keep(still)
            rows = torch.as_tensor(still, device=current.device)
            active, current, previous, prev_action = active[still], current[rows], previous[rows], prev_action[rows]
        action = choose_actions(lm, decoder.hidden, current)
        hidden = decoder.append(ACTION, actions=action)
        next_norm = next_states(lm, hidden, current, action, prev_action, previous).float()
        next_raw = denormalise(next_norm.cpu().numpy())
        for i, row in enumerate(active):
            a = int(action[i])
            actions[row].append(a)
            states[row].append(next_raw[i])
            if is_success is not None and is_success(int(row), states[row][-2], a, next_raw[i]):
                success[row] = done[row] = True
            elif step + 1 >= limits[row]:
                done[row] = True
        if done.all():
            break
        previous, prev_action, current = current, action, next_norm
        decoder.append(STATE, states=next_norm)
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
    states = [normalise(np.asarray(initial_state))]
    raw = [np.asarray(initial_state, dtype=np.float32)]
    actions: list[int] = []
    ok = False

    def last_hidden() -> torch.Tensor:
        sample = builder.generation_context(instruction, np.stack(states), np.asarray(actions, dtype=np.int64))
        batch = {k: v.to(device) for k, v in collate([sample], 0).items()}
        return hidden_states(lm, batch)[:, -1]

    for _ in range(max_steps):
        current = torch.from_numpy(states[-1][None]).to(device)
        action = int(choose_actions(lm, last_hidden(), current)[0])
        prev_action = torch.tensor([actions[-1] if actions else -1], device=device)
        previous = torch.from_numpy(states[-2 if len(states) > 1 else -1][None]).to(device)
        actions.append(action)
        action_t = torch.tensor([action], device=device)
        next_norm = next_states(lm, last_hidden(), current, action_t, prev_action, previous).float().cpu().numpy()[0]
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
    decoder = Decoder(lm, samples, tokenizer.pad_token_id)
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
        action = torch.as_tensor(actions[start : start + batch_size], dtype=torch.long, device=h.device)
        preds.append(denormalise(numeric_of(lm).predict_state(h, anchor, action).cpu().numpy()))
    return np.concatenate(preds)
