"""The numeric input / output modules of KALM and the state normalisation (`reference/kalm-method.md` §4.2)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kalm.tasks.goals import N_ACTIONS

OBS_DIM = 10
# The workbench: walls at x = +-0.6 and y = -0.3 / 0.7 (reference/clevr-robot.md §1); states map to [-1, 1].
_CENTRE = np.tile(np.array([0.0, 0.2], dtype=np.float32), OBS_DIM // 2)
_HALF = np.tile(np.array([0.6, 0.5], dtype=np.float32), OBS_DIM // 2)


def normalise(states: np.ndarray) -> np.ndarray:
    """Map raw (x, y) states into [-1, 1] by the workbench bounds."""
    return ((np.asarray(states, dtype=np.float32) - _CENTRE) / _HALF).astype(np.float32)


def denormalise(states: np.ndarray) -> np.ndarray:
    """Inverse of ``normalise``."""
    return (np.asarray(states, dtype=np.float32) * _HALF + _CENTRE).astype(np.float32)


class NumericIO(nn.Module):
    """State Linear and action Embedding into the hidden size; state and action heads out of it.

    With ``residual_state`` the state head predicts the change from the latest state in the context (the
    "anchor"; zero before the first state), so "nothing moves" is the starting point rather than something the
    LM must learn to copy through all its layers. ``residual_state=False`` is the paper's absolute head.
    """

    def __init__(
        self,
        hidden_size: int,
        obs_dim: int = OBS_DIM,
        n_actions: int = N_ACTIONS,
        residual_state: bool = True,
        embed_std: float = 0.02,
    ):
        super().__init__()
        self.residual_state = residual_state
        self.state_in = nn.Linear(obs_dim, hidden_size)
        self.action_in = nn.Embedding(n_actions, hidden_size)
        self.state_out = nn.Linear(hidden_size, obs_dim)
        self.action_out = nn.Linear(hidden_size, n_actions)
        # Slots start at the scale of the LM's token embeddings (``embed_std``), or the LM barely sees them;
        # normalised coordinates have E[x^2] ~ 1/3. Heads start at zero: "no change" and uniform actions.
        nn.init.normal_(self.state_in.weight, std=embed_std / (obs_dim / 3) ** 0.5)
        nn.init.zeros_(self.state_in.bias)
        nn.init.normal_(self.action_in.weight, std=embed_std)
        for head in (self.state_out, self.action_out):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def embed(
        self, token_embeds: torch.Tensor, kinds: torch.Tensor, states: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Replace the embeddings at state (kind 1) and action (kind 2) slots by the numeric inputs."""
        state_emb = self.state_in(states.float()).to(token_embeds.dtype)
        action_emb = self.action_in(actions).to(token_embeds.dtype)
        kinds = kinds[..., None]
        return torch.where(kinds == 1, state_emb, torch.where(kinds == 2, action_emb, token_embeds))

    def predict_state(self, hidden: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """Normalised next-state prediction from hidden states (fp32), relative to ``anchor`` when residual."""
        delta = self.state_out(hidden.float())
        return anchor.float() + delta if self.residual_state else delta


def anchor_states(kinds: torch.Tensor, state_inputs: torch.Tensor, state_kind: int = 1) -> torch.Tensor:
    """For each position, the input of the latest state slot at or before it (zero where there is none)."""
    length = kinds.shape[-1]
    positions = torch.arange(length, device=kinds.device).expand_as(kinds)
    latest = torch.where(kinds == state_kind, positions, torch.full_like(positions, -1)).cummax(dim=-1).values
    gathered = state_inputs.gather(-2, latest.clamp(min=0)[..., None].expand(*latest.shape, state_inputs.shape[-1]))
    return torch.where((latest >= 0)[..., None], gathered, torch.zeros_like(gathered))
