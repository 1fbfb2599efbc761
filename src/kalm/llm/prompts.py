"""The four SFT patterns of KALM (`reference/kalm-method.md` §4.3) as token / slot layouts.

A sample is a sequence of positions. Each position holds a text token, a state slot (its embedding comes from
the state input map; with ball slots one position per ball) or an action slot (from the action embedding table).
Targets sit on the position whose hidden state predicts them (next-element prediction): the state head reads s_0
from the last prompt token, a_t from s_t's (last) slot and s_t+1 from a_t's slot; text targets are ordinary
next-token labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXT, STATE, ACTION = 0, 1, 2
# With ball slots (``SampleBuilder(ball_slots=True)``) a state is one position per ball, in colour order: kind
# BALL + i for balls 0 .. n-2, and STATE for the last ball, the position that predicts the action as a one-slot
# state's does. Every one of them carries the whole state in ``state_inputs`` (the anchor of the state head).
BALL = 3
PATTERNS: tuple[str, ...] = ("generation", "dynamics", "terminal", "explanation")
STATE_TOKEN = "<|state|>"
ACTION_TOKEN = "<|action|>"
IGNORE = -100

GENERATION_PROMPT = (
    "Translate the textual instruction to state/action trajectory.\nInstruction: {instruction}.\nTrajectory:"
)
DYNAMICS_PROMPT = (
    "You are an expert in identifying dynamics change in the environment. Current state is {state}, "
    "after executing action {action}, we get next state"
)
TERMINAL_PROMPT = 'Initial state is {state}, after completing the instruction "{instruction}", we get terminal state'
EXPLANATION_PROMPT = "Translate the state/action trajectory to textual instruction.\nTrajectory:"
EXPLANATION_ANSWER = "\nInstruction:"


def state_kinds(n_slots: int) -> list[int]:
    """The kinds of one state's positions: one STATE slot, or BALL + i per ball with STATE for the last ball."""
    return [BALL + i for i in range(n_slots - 1)] + [STATE]


@dataclass
class Sample:
    """One SFT sample: per-position token ids, slot kinds, numeric inputs and targets (all length L)."""

    pattern: int
    input_ids: np.ndarray  # (L,) int64; placeholder ids at slots
    kinds: np.ndarray  # (L,) int8: TEXT, STATE, ACTION, BALL + i
    state_inputs: np.ndarray  # (L, 10) float32, normalised; zero where not a state slot
    action_inputs: np.ndarray  # (L,) int64; 0 where not an action slot
    state_targets: np.ndarray  # (L, 10) float32, normalised
    state_mask: np.ndarray  # (L,) bool: the position predicts a state
    action_targets: np.ndarray  # (L,) int64; IGNORE where not scored
    labels: np.ndarray  # (L,) int64 next-token labels; IGNORE where not scored

    def __len__(self) -> int:
        return len(self.input_ids)


class SampleBuilder:
    """Builds samples from normalised states, action ids and instructions with one tokenizer.

    ``tokenize(text) -> list[int]`` must not add special tokens; ``state_id`` / ``action_id`` are the
    placeholder token ids; ``eos_id`` ends explanation answers. ``ball_slots``: a state is one position per ball
    (``BALL``), else one position.
    """

    def __init__(
        self, tokenize, state_id: int, action_id: int, eos_id: int, obs_dim: int = 10, ball_slots: bool = False
    ):
        self.tokenize = tokenize
        self.state_id, self.action_id, self.eos_id = state_id, action_id, eos_id
        self.obs_dim = obs_dim
        self.state_kinds = state_kinds(obs_dim // 2 if ball_slots else 1)

    def _assemble(self, pattern: int, parts: list) -> Sample:
        """``parts``: ("text", str) | ("state", vec) | ("action", int) | ("answer", str); targets added later."""
        ids: list[int] = []
        kinds: list[int] = []
        states: list[np.ndarray] = []
        actions: list[int] = []
        labels: list[int] = []
        zero = np.zeros(self.obs_dim, dtype=np.float32)
        for kind, value in parts:
            if kind in ("text", "answer"):
                tokens = self.tokenize(value)
                if kind == "answer":
                    tokens = tokens + [self.eos_id]
                    if labels:
                        labels[-1] = tokens[0]  # the last prompt position predicts the first answer token
                    labels.extend(tokens[1:] + [IGNORE])
                else:
                    labels.extend([IGNORE] * len(tokens))
                ids.extend(tokens)
                kinds.extend([TEXT] * len(tokens))
                states.extend([zero] * len(tokens))
                actions.extend([0] * len(tokens))
            elif kind == "state":
                width = len(self.state_kinds)
                ids.extend([self.state_id] * width)
                kinds.extend(self.state_kinds)
                states.extend([np.asarray(value, dtype=np.float32)] * width)
                actions.extend([0] * width)
                labels.extend([IGNORE] * width)
            else:
                ids.append(self.action_id)
                kinds.append(ACTION)
                states.append(zero)
                actions.append(int(value))
                labels.append(IGNORE)
        n = len(ids)
        return Sample(
            pattern=pattern,
            input_ids=np.asarray(ids, dtype=np.int64),
            kinds=np.asarray(kinds, dtype=np.int8),
            state_inputs=np.stack(states).astype(np.float32),
            action_inputs=np.asarray(actions, dtype=np.int64),
            state_targets=np.zeros((n, self.obs_dim), dtype=np.float32),
            state_mask=np.zeros(n, dtype=bool),
            action_targets=np.full(n, IGNORE, dtype=np.int64),
            labels=np.asarray(labels, dtype=np.int64),
        )

    @staticmethod
    def _trajectory(states: np.ndarray, actions: np.ndarray) -> list:
        parts: list = []
        for t, state in enumerate(states):
            parts.append(("state", state))
            if t < len(actions):
                parts.append(("action", int(actions[t])))
        return parts

    def generation(self, instruction: str, states: np.ndarray, actions: np.ndarray) -> Sample:
        """Pattern 0: instruction -> s_0, a_0, ..., s_T (states and actions scored)."""
        prompt = GENERATION_PROMPT.format(instruction=instruction.rstrip("."))
        sample = self._assemble(0, [("text", prompt), *self._trajectory(states, actions)])
        self._score_trajectory(sample, states, actions)
        return sample

    def _score_trajectory(self, sample: Sample, states: np.ndarray, actions: np.ndarray) -> None:
        slots = np.flatnonzero(sample.kinds != TEXT)
        first = slots[0]
        sample.state_targets[first - 1] = states[0]
        sample.state_mask[first - 1] = True
        state_slots = np.flatnonzero(sample.kinds == STATE)
        action_slots = np.flatnonzero(sample.kinds == ACTION)
        sample.action_targets[state_slots[: len(actions)]] = actions
        sample.state_targets[action_slots] = states[1:]
        sample.state_mask[action_slots] = True

    def dynamics(self, state: np.ndarray, action: int, next_state: np.ndarray) -> Sample:
        """Pattern 1: (s_t, a_t) -> s_t+1, read from the last prompt position."""
        before, rest = DYNAMICS_PROMPT.split("{state}")
        middle, after = rest.split("{action}")
        sample = self._assemble(
            1, [("text", before), ("state", state), ("text", middle), ("action", action), ("text", after)]
        )
        sample.state_targets[-1] = next_state
        sample.state_mask[-1] = True
        return sample

    def terminal(self, instruction: str, initial: np.ndarray, final: np.ndarray) -> Sample:
        """Pattern 2: (s_0, instruction) -> the last state of the rollout."""
        before, after = TERMINAL_PROMPT.split("{state}")
        after = after.format(instruction=instruction.rstrip("."))
        sample = self._assemble(2, [("text", before), ("state", initial), ("text", after)])
        sample.state_targets[-1] = final
        sample.state_mask[-1] = True
        return sample

    def explanation(self, instruction: str | None, states: np.ndarray, actions: np.ndarray) -> Sample:
        """Pattern 3: rollout -> instruction text (token loss on the answer and its EOS).

        With ``instruction=None`` the sample ends at the answer prompt, ready for decoding.
        """
        parts = [("text", EXPLANATION_PROMPT), *self._trajectory(states, actions), ("text", EXPLANATION_ANSWER)]
        if instruction is not None:
            parts.append(("answer", " " + instruction.rstrip(".") + "."))
        return self._assemble(3, parts)

    def instruction_prompt(self, instruction: str) -> Sample:
        """The pattern-0 text before s_0: where the LM has read the instruction (``kalm.llm.reader``)."""
        return self._assemble(0, [("text", GENERATION_PROMPT.format(instruction=instruction.rstrip(".")))])

    def generation_prompt(self, instruction: str, initial: np.ndarray) -> Sample:
        """The pattern-0 prefix up to and including the real s_0 slot, for rollout generation."""
        return self.generation_context(instruction, initial[None], np.zeros(0, dtype=np.int64))

    def generation_context(self, instruction: str, states: np.ndarray, actions: np.ndarray) -> Sample:
        """A pattern-0 prefix s_0, a_0, ..., ending in a state (T+1 states) or an action (as many as states)."""
        if len(actions) not in (len(states) - 1, len(states)):
            raise ValueError(f"{len(states)} states and {len(actions)} actions do not interleave")
        prompt = GENERATION_PROMPT.format(instruction=instruction.rstrip("."))
        parts: list = [("text", prompt)]
        for t, state in enumerate(states):
            parts.append(("state", state))
            if t < len(actions):
                parts.append(("action", int(actions[t])))
        return self._assemble(0, parts)
