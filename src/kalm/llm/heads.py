"""Numeric heads fitted on the frozen grounded LM over many offline episodes (``ground.heads: mlp``).

The LoRA SFT teaches the LM the language <-> rollout mapping on a few hundred episodes; its linear heads read the
hidden state alone and, as a policy in the real env, succeed on ~10 % of training goals
(``reference/learnability.md`` §3.1). After the SFT, with the LM frozen, these heads are fitted on data the SFT
cannot afford:

- the **action head** reads the hidden state of the state slot (L2-normalised) *and* the state it stands for, from
  teacher-forced generation samples of offline episodes run once through the LM (forward only);
- the **state head** (the world model) reads the current state, the action, the previous action and the previous
  change (a pushed ball coasts into the next step, ``clevr-robot.md`` §5) and predicts the change; it reads no
  hidden state, so it fits on every transition of the offline data without a pass through the LM.

Both are small ReLU MLPs fitted with Adam for a fixed number of steps (results depend on params, not the clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kalm.llm.numeric import RESIDUAL_SCALE, normalise
from kalm.tasks.world import N_ACTIONS, OBS_DIM

HEADS_FILE = "heads.safetensors"
HEADS_ATTR = "kalm_heads"
# The action head reads the hidden state L2-normalised times this: the LM's hidden norms vary by position and
# layer-norm weight (~10-100x between slots); at unit norm beside coordinates in [-1, 1] it barely registered
# (learnability §3.1 used x10).
HIDDEN_SCALE = 10.0
FIT_BATCH = 256
FIT_LR = 1e-3


def mlp(n_in: int, units: Sequence[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in units:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


def world_inputs(state, action, prev_action, prev_state) -> torch.Tensor:
    """The state head's input: s_t, one-hot a_t, one-hot a_t-1 (class 0: none), (s_t - s_t-1) / RESIDUAL_SCALE
    (zero where there is no previous step); normalised states, actions as int tensors (-1: none)."""
    state, prev_state = state.float(), prev_state.float()
    has_prev = (prev_action >= 0)[..., None]
    change = torch.where(has_prev, (state - prev_state) / RESIDUAL_SCALE, torch.zeros_like(state))
    return torch.cat(
        [
            state,
            F.one_hot(action.long(), N_ACTIONS).float(),
            F.one_hot(prev_action.long() + 1, N_ACTIONS + 1).float(),
            change,
        ],
        dim=-1,
    )


class FittedHeads(nn.Module):
    """An action head on [hidden state, s_t] and a world model on (s_t, a_t, a_t-1, s_t - s_t-1) (normalised)."""

    def __init__(self, hidden_size: int, units: Sequence[int] = (256, 256)):
        super().__init__()
        self.units = list(units)  # recorded in kalm.json to rebuild the heads on load
        self.action_mlp = mlp(hidden_size + OBS_DIM, units, N_ACTIONS)
        self.state_mlp = mlp(OBS_DIM + N_ACTIONS + N_ACTIONS + 1 + OBS_DIM, units, OBS_DIM)

    def action_logits(self, hidden: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Logits (..., 40) from the state slot's hidden state and its (normalised) state; fp32 even under autocast
        (fitted in fp32: the same numbers in every stage)."""
        with torch.autocast(hidden.device.type, enabled=False):
            h = F.normalize(hidden.float(), dim=-1) * HIDDEN_SCALE
            return self.action_mlp(torch.cat([h, state.float()], dim=-1))

    def next_state(self, state, action, prev_action, prev_state) -> torch.Tensor:
        """s_t+1 (normalised) = s_t + RESIDUAL_SCALE * the predicted change (fp32)."""
        with torch.autocast(state.device.type, enabled=False):
            change = self.state_mlp(world_inputs(state, action, prev_action, prev_state))
            return state.float() + RESIDUAL_SCALE * change


def heads_of(lm: nn.Module) -> FittedHeads | None:
    """The fitted heads attached to a grounded model, on its device (None: it uses the SFT's own linear heads)."""
    heads = getattr(lm, HEADS_ATTR, None)
    return heads if heads is None else heads.to(next(lm.parameters()).device)


def attach(lm: nn.Module, heads: FittedHeads | None) -> None:
    """Make ``heads`` the model's action and state heads (kept out of the LM's own modules and its adapter).

    Stored in ``__dict__``, not as a submodule, so the PEFT adapter, ``lm.parameters()`` and the trainer never see
    them; they are saved in their own file (``HEADS_FILE``)."""
    object.__setattr__(lm, HEADS_ATTR, heads)


@dataclass
class Transitions:
    """Training rows of the heads, normalised: s_t (N, 10), a_t (N,), a_t-1 (N,, -1: none), s_t-1, s_t+1, and the
    hidden state of s_t's slot (N, H) where the LM was run (None otherwise)."""

    states: np.ndarray
    actions: np.ndarray
    prev_actions: np.ndarray
    prev_states: np.ndarray
    next_states: np.ndarray
    hidden: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def subset(self, rows: np.ndarray) -> Transitions:
        pick = lambda x: None if x is None else x[rows]  # noqa: E731
        return Transitions(*(pick(getattr(self, f)) for f in self.__dataclass_fields__))


def episode_transitions(observations: Sequence[np.ndarray], actions: Sequence[np.ndarray]) -> Transitions:
    """Every transition of raw (T+1, 10) / (T,) rollouts, with its previous step."""
    parts = []
    for obs, acts in zip(observations, actions, strict=True):
        s = normalise(obs)
        a = np.asarray(acts, dtype=np.int64)
        if not len(a):
            continue
        prev_a = np.concatenate([[-1], a[:-1]])
        prev_s = np.concatenate([s[:1], s[:-2]])
        parts.append((s[:-1], a, prev_a, prev_s, s[1:]))
    return Transitions(*(np.concatenate(column) for column in zip(*parts, strict=True)))


@torch.no_grad()
def slot_features(lm, builder, pad_id: int, instructions: Sequence[str], observations, actions, batch_size: int = 32):
    """The hidden state at every state slot that predicts an action, from teacher-forced generation samples of
    rollouts (raw states) run through the frozen LM, forward only: (N, H) float32 in episode order, matching
    ``episode_transitions`` of the same rollouts."""
    from kalm.llm.batches import collate
    from kalm.llm.model import hidden_states

    device = next(lm.parameters()).device
    samples = [
        builder.generation(text, normalise(o), np.asarray(a, dtype=np.int64))
        for text, o, a in zip(instructions, observations, actions, strict=True)
        if len(a)
    ]
    out = []
    for lo in range(0, len(samples), batch_size):
        batch = {k: v.to(device) for k, v in collate(samples[lo : lo + batch_size], pad_id).items()}
        hidden = hidden_states(lm, batch)
        out.append(hidden[batch["action_targets"] != -100].float().cpu().numpy())
    return np.concatenate(out)


def transitions_with_hidden(lm, builder, pad_id: int, episodes: Sequence, phrasings: Sequence[str]) -> Transitions:
    """``episode_transitions`` of ``episodes`` (each with ``observations`` and ``actions``) with the hidden state of
    every s_t's slot, each episode's instruction read as its phrasing (``slot_features``); run it under the caller's
    autocast."""
    observations, actions = [e.observations for e in episodes], [e.actions for e in episodes]
    data = episode_transitions(observations, actions)
    data.hidden = slot_features(lm, builder, pad_id, phrasings, observations, actions)
    return data


def _tensors(data: Transitions):
    t = lambda x: torch.from_numpy(np.asarray(x))  # noqa: E731
    return t(data.states), t(data.actions), t(data.prev_actions), t(data.prev_states), t(data.next_states)


def action_loss(heads: FittedHeads, data: Transitions) -> float:
    """Cross-entropy of the action head on ``data`` (needs hidden states)."""
    with torch.no_grad():
        s, a, *_ = _tensors(data)
        return float(F.cross_entropy(heads.action_logits(torch.from_numpy(data.hidden), s), a))


def state_loss(heads: FittedHeads, data: Transitions) -> float:
    """Mean squared error of the state head on ``data``, in RESIDUAL_SCALE units (copying scores ~1)."""
    with torch.no_grad():
        s, a, pa, ps, nxt = _tensors(data)
        return float(F.mse_loss(heads.next_state(s, a, pa, ps), nxt) / RESIDUAL_SCALE**2)


def fit(heads: FittedHeads, part: str, data: Transitions, steps: int, seed: int) -> None:
    """Fit one head (``action`` or ``state``) on ``data`` with Adam, ``steps`` minibatches drawn with ``seed``; the
    other head is untouched."""
    module = heads.action_mlp if part == "action" else heads.state_mlp
    optimiser = torch.optim.Adam(module.parameters(), lr=FIT_LR)
    generator = torch.Generator().manual_seed(seed)
    s, a, pa, ps, nxt = _tensors(data)
    h = torch.from_numpy(data.hidden) if part == "action" else None
    for _ in range(steps):
        rows = torch.randint(len(data), (min(FIT_BATCH, len(data)),), generator=generator)
        if part == "action":
            loss = F.cross_entropy(heads.action_logits(h[rows], s[rows]), a[rows])
        else:
            loss = F.mse_loss(heads.next_state(s[rows], a[rows], pa[rows], ps[rows]), nxt[rows]) / RESIDUAL_SCALE**2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
