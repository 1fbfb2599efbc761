"""Held-out diagnostics of a grounded model: dynamics MSE, explanation accuracy, generation match rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kalm.data import Episode
from kalm.llm.generate import explain, generate_rollouts, predict_next_states
from kalm.llm.prompts import SampleBuilder
from kalm.tasks import parse_goal
from kalm.tasks.goals import is_plausible
from kalm.tasks.language import parse_instruction


def held_out_transitions(episodes: Sequence[Episode], n: int, rng: np.random.Generator):
    """Up to ``n`` (s_t, a_t, s_t+1) drawn without replacement from the episodes' transitions."""
    pairs = [(e, t) for e in episodes for t in range(e.length)]
    picks = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
    states = np.stack([pairs[i][0].observations[pairs[i][1]] for i in picks])
    actions = np.array([pairs[i][0].actions[pairs[i][1]] for i in picks], dtype=np.int64)
    nxt = np.stack([pairs[i][0].observations[pairs[i][1] + 1] for i in picks])
    return states, actions, nxt


def dynamics_metrics(lm, builder: SampleBuilder, pad_id: int, states, actions, next_states) -> dict[str, float]:
    """Mean squared error of the predicted next state (raw units) and of the copy baseline s' = s."""
    predicted = predict_next_states(lm, builder, pad_id, states, actions)
    return {
        "dynamics_mse": float(np.mean((predicted - next_states) ** 2)),
        "dynamics_mse_copy_baseline": float(np.mean((states - next_states) ** 2)),
    }


def explanation_accuracy(lm, builder: SampleBuilder, tokenizer, episodes: Sequence[Episode]) -> tuple[float, list[str]]:
    """Share of rollouts whose greedy explanation parses back to the episode's goal (colours + relation)."""
    texts = explain(lm, builder, tokenizer, [(e.observations, e.actions) for e in episodes])
    hits = [parse_instruction(text) == parse_goal(e.goal) for text, e in zip(texts, episodes, strict=True)]
    return float(np.mean(hits)), texts


def generation_match_rate(
    lm, builder: SampleBuilder, pad_id: int, episodes: Sequence[Episode], max_steps: int
) -> tuple[float, float]:
    """Share of greedy rollouts, generated for the episodes' instructions from their real initial states, that
    reach a generated state satisfying the goal (the goal's own success test) which is also physically plausible
    (``is_plausible``: an untrained model's collapsed states would otherwise pass relation tests by accident);
    and the rollouts' mean length."""
    goals = [parse_goal(e.goal) for e in episodes]
    rollouts = generate_rollouts(
        lm,
        builder,
        pad_id,
        [e.instruction for e in episodes],
        np.stack([e.observations[0] for e in episodes]),
        max_steps,
        is_success=lambda row, prev, action, nxt: goals[row].is_success(prev, action, nxt) and is_plausible(nxt),
    )
    return float(np.mean([ok for _, _, ok in rollouts])), float(np.mean([len(a) for _, a, _ in rollouts]))
