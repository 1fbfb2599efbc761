"""The numeric input / output modules of KALM and the state normalisation (`reference/kalm-method.md` §4.2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kalm.llm.prompts import ACTION, BALL, STATE
from kalm.tasks.goals import relation_holds_batch
from kalm.tasks.world import COLOURS, DIRECTIONS, N_ACTIONS, OBS_DIM, PUSH_WORDS, WALLS_HIGH, WALLS_LOW

# States map to [-1, 1] between the wall planes.
_CENTRE = np.tile((np.array(WALLS_HIGH) + np.array(WALLS_LOW)) / 2, OBS_DIM // 2).astype(np.float32)
_HALF = np.tile((np.array(WALLS_HIGH) - np.array(WALLS_LOW)) / 2, OBS_DIM // 2).astype(np.float32)


def normalise(states: np.ndarray) -> np.ndarray:
    """Map raw (x, y) states into [-1, 1] by the workbench bounds."""
    return ((np.asarray(states, dtype=np.float32) - _CENTRE) / _HALF).astype(np.float32)


def denormalise(states: np.ndarray) -> np.ndarray:
    """Inverse of ``normalise``."""
    return (np.asarray(states, dtype=np.float32) * _HALF + _CENTRE).astype(np.float32)


ACTION_INTERFACES = ("words", "table")
STATE_FEATURES = ("linear", "fourier", "pairs", "relations")
FOURIER_BANDS = 4  # sin / cos of pi * 2^k * x, k < 4: wavelengths from the workbench down to 1/8 of it
# One real transition's change of a coordinate, normalised (RMS 0.107 over all coordinates of the legible data's
# transitions; measured in README "Grounding"). The residual head predicts changes in these units, so the state
# loss starts near 1 (copying) beside the cross-entropies instead of ~1e-3, and reaches the LM's weights.
RESIDUAL_SCALE = 0.1
# The word action head's logits start as this many times the cosine of hidden state and action vector. On SmolLM2
# the untrained cosines differ across actions by ~0.03 (std), so the logits' spread is ~0.5 and the untrained CE
# ~ln 40 + 0.1; at 1x the head learned nothing in 40 steps: its logits and their gradients are 10x smaller.
WORD_LOGIT_COSINE_SCALE = 10.0


def slot_features(states: torch.Tensor, kind: str) -> torch.Tensor:
    """The state slot's input: the normalised coordinates, plus their Fourier features (``fourier``), every pair of
    balls' offset and distance (``pairs``: a goal relation is an offset between two balls), or which goal relations
    hold (``relations``)."""
    states = states.float()
    if kind == "linear":
        return states
    if kind == "relations":
        return torch.cat([states, relation_features(states)], dim=-1)
    if kind == "pairs":
        balls = states.unflatten(-1, (-1, 2))
        first, second = torch.triu_indices(balls.shape[-2], balls.shape[-2], 1, device=states.device)
        offsets = balls[..., first, :] - balls[..., second, :]
        return torch.cat([states, offsets.flatten(-2), offsets.norm(dim=-1)], dim=-1)
    angles = states[..., None] * (torch.pi * 2.0 ** torch.arange(FOURIER_BANDS, device=states.device))
    return torch.cat([states, angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)


def relation_features(states: torch.Tensor) -> torch.Tensor:
    """(..., 5 * 4 * 4): for every ordered pair of balls (src, dst) and direction, whether the goal relation "src
    ``direction`` of dst" holds (the goals' own test, ``relation_holds_batch``), as 0 / 1. Inputs only: no gradient."""
    balls = denormalise(states.detach().cpu().numpy()).reshape(*states.shape[:-1], -1, 2)
    n = balls.shape[-2]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    bits = [relation_holds_batch(balls[..., i, :], balls[..., j, :], d) for i, j in pairs for d in DIRECTIONS]
    return torch.from_numpy(np.stack(bits, axis=-1).astype(np.float32)).to(states.device)


def _feature_dim(obs_dim: int, kind: str) -> int:
    n_balls = obs_dim // 2
    n_pairs = n_balls * (n_balls - 1) // 2
    extra = {"linear": 0, "fourier": 2 * FOURIER_BANDS * obs_dim, "pairs": 3 * n_pairs,
             "relations": 2 * n_pairs * len(DIRECTIONS)}[kind]  # fmt: skip
    return obs_dim + extra


def word_vectors(lm: nn.Module, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM's input embeddings of the colour words (5, H) and of each push direction's word(s) (8, H).

    A word is the mean of its tokens (" red" is one token in SmolLM2; the tiny tokenizer may split it); a diagonal
    push is the sum of its two words.
    """
    table = lm.get_input_embeddings().weight.detach().float()

    def word(text: str) -> torch.Tensor:
        return table[tokenizer(" " + text, add_special_tokens=False)["input_ids"]].mean(0)

    colours = torch.stack([word(c) for c in COLOURS])
    pushes = torch.stack([sum(word(w) for w in words) for words in PUSH_WORDS])
    return colours, pushes


class WordActions(nn.Module):
    """Action a = ball * 8 + push as word vectors: colour word + direction word(s), both trainable.

    Initialised from the LM's own token embeddings (``colours`` (5, H), ``pushes`` (8, H)), so the LM reads an
    action as the words that name it and the output side starts from the words it already predicts.
    """

    def __init__(self, colours: torch.Tensor, pushes: torch.Tensor):
        super().__init__()
        self.colour = nn.Parameter(colours.detach().float().clone())
        self.push = nn.Parameter(pushes.detach().float().clone())
        self.num_embeddings = len(colours) * len(pushes)

    def vectors(self) -> torch.Tensor:
        """(n_actions, H): row a is colour[a // 8] + push[a % 8]."""
        return (self.colour[:, None, :] + self.push[None, :, :]).flatten(0, 1)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        return self.colour[actions // len(self.push)] + self.push[actions % len(self.push)]


class WordActionHead(WordActions):
    """Action logits: the hidden state against the action word vectors, times a learned scale, plus a bias.

    The raw dot products are the size of the LM's own logits (untrained action CE 15-16 against ln 40 = 3.7); the
    scale starts at WORD_LOGIT_COSINE_SCALE / (|h| * |v|), |h| the norm of the LM's final-norm weight, so the
    untrained logits are scaled cosines and the untrained CE is ~ln 40.
    """

    def __init__(self, colours: torch.Tensor, pushes: torch.Tensor, hidden_norm: float):
        super().__init__(colours, pushes)
        row_norm = float(self.vectors().detach().norm(dim=-1).mean().clamp(min=1e-6))
        self.scale = nn.Parameter(torch.tensor(WORD_LOGIT_COSINE_SCALE / (max(hidden_norm, 1e-6) * row_norm)))
        self.bias = nn.Parameter(torch.zeros(self.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.scale * (hidden.float() @ self.vectors().T) + self.bias


class NumericIO(nn.Module):
    """State input map and action input into the hidden size; state and action heads out of it.

    With ``residual_state`` the state head predicts the change from the latest state in the context (the
    "anchor"; zero before the first state), in units of ``RESIDUAL_SCALE``, so "nothing moves" is the starting
    point rather than something the LM must learn to copy through all its layers. ``residual_state=False`` is the
    paper's absolute head. ``action_interface``: ``table`` is the paper's Embedding(40) + Linear head, ``words``
    the LM's own colour and direction words (``word_vectors``: (5, H) colours, (8, H) pushes). ``state_slots``:
    ``one`` position per state reading all coordinates, or ``balls``: one per ball (``prompts.BALL``), each its
    colour word plus the map of its own coordinates.
    """

    def __init__(
        self,
        hidden_size: int,
        obs_dim: int = OBS_DIM,
        n_actions: int = N_ACTIONS,
        residual_state: bool = True,
        embed_std: float = 0.02,
        action_interface: str = "table",
        state_features: str = "linear",
        word_vectors: tuple[torch.Tensor, torch.Tensor] | None = None,
        hidden_norm: float = 1.0,
        action_displacement: bool = False,
        state_slots: str = "one",
    ):
        super().__init__()
        self.residual_state = residual_state
        self.state_feature_kind = state_features
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.ball_slots = state_slots == "balls"
        features = _feature_dim(2 if self.ball_slots else obs_dim, state_features)
        self.state_in = nn.Linear(features, hidden_size)
        if self.ball_slots:
            # A ball's slot is its colour word (a trainable copy of the LM's embedding) plus the map of its own
            # (x, y): the LM reads "red" at the place where the red ball is, as it reads the colour in the text.
            colours = word_vectors[0] if word_vectors is not None else torch.zeros(obs_dim // 2, hidden_size)
            self.ball_colour = nn.Parameter(colours.detach().float().clone())
        self.state_out = nn.Linear(hidden_size, obs_dim)
        # Slots start at the scale of the LM's token embeddings (``embed_std``), or the LM barely sees them;
        # normalised coordinates have E[x^2] ~ 1/3, Fourier features 1/2.
        nn.init.normal_(self.state_in.weight, std=embed_std / (features / 2.5) ** 0.5)
        nn.init.zeros_(self.state_in.bias)
        # The state head starts at zero: "no change" (residual).
        nn.init.zeros_(self.state_out.weight)
        nn.init.zeros_(self.state_out.bias)
        # With ``action_displacement`` (residual only) the state head adds a per-action displacement (in its units)
        # wherever an action precedes the prediction: the push's usual effect, set from the training data
        # (``set_displacement``); the LM then predicts what differs (contacts, walls). Part of the head (head_lr).
        self.displacement = nn.Embedding(n_actions, obs_dim) if action_displacement and residual_state else None
        if self.displacement is not None:
            nn.init.zeros_(self.displacement.weight)
        if action_interface == "words":
            n_pushes = n_actions // 5
            colours, pushes = word_vectors or (torch.zeros(5, hidden_size), torch.zeros(n_pushes, hidden_size))
            self.action_in: nn.Module = WordActions(colours, pushes)
            self.action_out: nn.Module = WordActionHead(colours, pushes, hidden_norm)
        else:
            self.action_in = nn.Embedding(n_actions, hidden_size)
            nn.init.normal_(self.action_in.weight, std=embed_std)
            self.action_out = nn.Linear(hidden_size, n_actions)
            nn.init.zeros_(self.action_out.weight)  # uniform actions
            nn.init.zeros_(self.action_out.bias)

    @property
    def state_scale(self) -> float:
        """The unit the state head predicts in (its loss is measured in it too)."""
        return RESIDUAL_SCALE if self.residual_state else 1.0

    def embed(
        self, token_embeds: torch.Tensor, kinds: torch.Tensor, states: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Replace the embeddings at state (STATE, BALL + i) and action (ACTION) slots by the numeric inputs."""
        state_emb = self._state_embeds(kinds, states).to(token_embeds.dtype)
        action_emb = self.action_in(actions).to(token_embeds.dtype)
        is_state = ((kinds == STATE) | (kinds >= BALL))[..., None]
        return torch.where(is_state, state_emb, torch.where(kinds[..., None] == ACTION, action_emb, token_embeds))

    def _state_embeds(self, kinds: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        if not self.ball_slots:
            return self.state_in(slot_features(states, self.state_feature_kind))
        n_balls = self.obs_dim // 2
        ball = torch.where(kinds == STATE, n_balls - 1, (kinds - BALL).clamp(0, n_balls - 1))
        index = ball[..., None, None].expand(*ball.shape, 1, 2)
        xy = states.unflatten(-1, (n_balls, 2)).gather(-2, index).squeeze(-2)
        return self.ball_colour[ball] + self.state_in(slot_features(xy, self.state_feature_kind))

    def predict_state(
        self, hidden: torch.Tensor, anchor: torch.Tensor, action: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalised next-state prediction from hidden states (fp32), relative to ``anchor`` when residual;
        ``action``: the latest action before the prediction (-1 or None: none), for the displacement."""
        delta = self.state_out(hidden.float())
        if self.displacement is not None and action is not None:
            has = (action >= 0)[..., None]
            delta = delta + torch.where(has, self.displacement(action.clamp(min=0)), torch.zeros_like(delta))
        delta = self.state_scale * delta
        return anchor.float() + delta if self.residual_state else delta

    @torch.no_grad()
    def set_displacement(self, states: Sequence[np.ndarray], actions: Sequence[np.ndarray]) -> None:
        """Each action's mean change of the normalised state over (T+1, 10) / (T,) training rollouts."""
        if self.displacement is None:
            return
        total = np.zeros((self.n_actions, self.obs_dim))
        count = np.zeros(self.n_actions)
        for s, a in zip(states, actions, strict=True):
            np.add.at(total, a, np.diff(normalise(s), axis=0))
            np.add.at(count, a, 1)
        mean = total / np.maximum(count, 1)[:, None] / self.state_scale
        self.displacement.weight.copy_(torch.from_numpy(mean).float())


def latest_actions(kinds: torch.Tensor, action_inputs: torch.Tensor, action_kind: int = ACTION) -> torch.Tensor:
    """For each position, the input of the latest action slot at or before it (-1 where there is none)."""
    length = kinds.shape[-1]
    positions = torch.arange(length, device=kinds.device).expand_as(kinds)
    latest = torch.where(kinds == action_kind, positions, torch.full_like(positions, -1)).cummax(dim=-1).values
    gathered = action_inputs.gather(-1, latest.clamp(min=0))
    return torch.where(latest >= 0, gathered, torch.full_like(gathered, -1))


def anchor_states(kinds: torch.Tensor, state_inputs: torch.Tensor, state_kind: int = STATE) -> torch.Tensor:
    """For each position, the input of the latest state slot at or before it (zero where there is none)."""
    length = kinds.shape[-1]
    positions = torch.arange(length, device=kinds.device).expand_as(kinds)
    latest = torch.where(kinds == state_kind, positions, torch.full_like(positions, -1)).cummax(dim=-1).values
    gathered = state_inputs.gather(-2, latest.clamp(min=0)[..., None].expand(*latest.shape, state_inputs.shape[-1]))
    return torch.where((latest >= 0)[..., None], gathered, torch.zeros_like(gathered))
