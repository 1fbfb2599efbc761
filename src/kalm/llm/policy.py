"""The grounded LLM as a policy in the real env (the paper's Fig. 5 "LLM as policy").

It reads the generation prompt with the instruction and the real s_0, then the real history: at each step
a_t = argmax of its action head, the env steps, and the action and the real s_t+1 are appended to its context (one
KV cache for all the episodes stepped together).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kalm.llm.generate import Decoder, choose_actions
from kalm.llm.numeric import normalise
from kalm.llm.prompts import ACTION, STATE, SampleBuilder


class LLMPolicy:
    """A chooser ``(states (n, 10) raw, episodes) -> actions (n,)`` for episodes stepped together; each episode
    has an ``instruction``. A call with an episode it has not seen starts a new batch (a new cache); otherwise the
    episodes must be those of its last call or a subset of them (finished ones leave)."""

    def __init__(self, lm, builder: SampleBuilder, pad_id: int):
        self.lm, self.builder, self.pad_id = lm, builder, pad_id
        self.decoder: Decoder | None = None
        self.rows: dict[int, int] = {}
        self.last_actions: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, states: np.ndarray, episodes: Sequence) -> np.ndarray:
        keys = [id(e) for e in episodes]
        current = torch.from_numpy(normalise(states))
        if self.decoder is None or any(k not in self.rows for k in keys):
            prompts = [self.builder.generation_prompt(e.instruction, s) for e, s in zip(episodes, current.numpy(),
                                                                                     strict=True)]  # fmt: skip
            self.decoder = Decoder(self.lm, prompts, self.pad_id)
        else:
            keep = [self.rows[k] for k in keys]
            if keep != list(range(len(self.rows))):
                self.decoder.keep(keep)
                self.last_actions = self.last_actions[torch.as_tensor(keep, device=self.last_actions.device)]
            self.decoder.append(ACTION, actions=self.last_actions)
            self.decoder.append(STATE, states=current.to(self.decoder.hidden.device))
        self.rows = {k: i for i, k in enumerate(keys)}
        self.last_actions = choose_actions(self.lm, self.decoder.hidden, current)
        return self.last_actions.cpu().numpy()
