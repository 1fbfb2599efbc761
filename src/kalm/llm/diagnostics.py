"""Held-out diagnostics of a grounded model: teacher-forced action and word accuracy, dynamics MSE, explanation
accuracy, generation match rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kalm.data import Episode
from kalm.llm.generate import choose_actions, explain, generate_rollouts, predict_next_states
from kalm.llm.heads import heads_of
from kalm.llm.numeric import denormalise, normalise
from kalm.llm.prompts import SampleBuilder
from kalm.tasks import parse_goal
from kalm.tasks.language import parse_instruction
from kalm.tasks.world import COLOURS, DIRECTIONS, is_plausible


def held_out_transitions(episodes: Sequence[Episode], n: int, rng: np.random.Generator):
    """Up to ``n`` (s_t, a_t, s_t+1, a_t-1, s_t-1) drawn without replacement from the episodes' transitions (raw
    states; a_t-1 = -1 and s_t-1 = s_t at an episode's first step)."""
    pairs = [(e, t) for e in episodes for t in range(e.length)]
    picks = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
    at = [pairs[i] for i in picks]
    states = np.stack([e.observations[t] for e, t in at])
    actions = np.array([e.actions[t] for e, t in at], dtype=np.int64)
    nxt = np.stack([e.observations[t + 1] for e, t in at])
    prev_actions = np.array([e.actions[t - 1] if t else -1 for e, t in at], dtype=np.int64)
    prev_states = np.stack([e.observations[max(t - 1, 0)] for e, t in at])
    return states, actions, nxt, prev_actions, prev_states


def dynamics_metrics(
    lm, builder: SampleBuilder, pad_id: int, states, actions, next_states, prev_actions, prev_states
) -> dict[str, float]:
    """Mean squared error of the predicted next state (raw units) and of the copy baseline s' = s: the fitted world
    model (reading the previous step, as in a rollout) where the model has one, else the dynamics pattern."""
    heads = heads_of(lm)
    if heads is None:
        predicted = predict_next_states(lm, builder, pad_id, states, actions)
    else:
        t = lambda x: torch.from_numpy(np.asarray(x))  # noqa: E731
        with torch.no_grad():
            norm = heads.next_state(t(normalise(states)), t(actions), t(prev_actions), t(normalise(prev_states)))
        predicted = denormalise(norm.numpy())
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


def _word_ids(tokenizer, words: Sequence[str]) -> set[int]:
    """Token ids of the words that are a single token after a space (the form they take inside a sentence)."""
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    return {i[0] for i in ids if len(i) == 1}


@torch.no_grad()
def teacher_forced_metrics(lm, builder: SampleBuilder, tokenizer, episodes: Sequence[Episode], batch_size: int = 16):
    """Teacher-forced held-out diagnostics on successful episodes (their recorded phrasing), no decoding:

    - ``action_accuracy``: argmax of the action head at the generation pattern's action slots = the recorded action;
    - ``named_ball_rate``: share of those argmax actions that push the goal's source ball, beside
      ``data_named_ball_rate``, the recorded actions' own share (chance: 0.2);
    - ``explanation_colour_accuracy`` / ``explanation_direction_accuracy``: next-token argmax at the explanation
      answer's colour-word / direction-word positions (None where the tokenizer splits those words);
    - ``heldout_loss``: the training loss on these generation and explanation samples (mean over batches).
    """
    from kalm.llm.batches import collate
    from kalm.llm.model import compute_losses, hidden_states

    device = next(lm.parameters()).device
    colour_ids, direction_ids = _word_ids(tokenizer, COLOURS), _word_ids(tokenizer, DIRECTIONS)
    hits = {"action": [], "named": [], "data_named": [], "colour": [], "direction": [], "loss": []}
    samples = []
    for e in episodes:
        states, actions = normalise(e.observations), e.actions.astype(np.int64)
        goal = parse_goal(e.goal)
        src = COLOURS.index(goal.src) if hasattr(goal, "src") else -1
        samples.append((src, builder.generation(e.instruction, states, actions)))
        samples.append((src, builder.explanation(e.instruction, states, actions)))
    for lo in range(0, len(samples), batch_size):
        part = samples[lo : lo + batch_size]
        batch = {k: v.to(device) for k, v in collate([s for _, s in part], tokenizer.pad_token_id).items()}
        hidden = hidden_states(lm, batch)
        hits["loss"].append(float(compute_losses(lm, batch, hidden)["loss"]))
        logits = choose_actions(lm, hidden, batch["state_inputs"])
        words = lm.get_output_embeddings()(hidden).float().argmax(-1)
        for row, (src, _) in enumerate(part):
            targets, labels = batch["action_targets"][row], batch["labels"][row]
            scored = targets != -100
            predicted, recorded = logits[row][scored], targets[scored]
            hits["action"] += (predicted == recorded).tolist()
            hits["named"] += (predicted // 8 == src).tolist()
            hits["data_named"] += (recorded // 8 == src).tolist()
            for name, ids in (("colour", colour_ids), ("direction", direction_ids)):
                at = torch.tensor([int(t) in ids for t in labels], device=device)
                hits[name] += (words[row][at] == labels[at]).tolist()
    rate = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {
        "action_accuracy": rate(hits["action"]),
        "named_ball_rate": rate(hits["named"]),
        "data_named_ball_rate": rate(hits["data_named"]),
        "explanation_colour_accuracy": rate(hits["colour"]),
        "explanation_direction_accuracy": rate(hits["direction"]),
        "heldout_loss": rate(hits["loss"]),
    }
