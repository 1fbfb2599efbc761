"""SFT samples from episodes, and right-padded batches of all patterns, trimmed to their longest sample."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kalm.data import Episode
from kalm.llm.numeric import normalise
from kalm.llm.prompts import IGNORE, PATTERNS, TEXT, Sample, SampleBuilder

_FIELDS = ("input_ids", "kinds", "state_inputs", "action_inputs", "state_targets", "state_mask", "action_targets")


def episode_samples(
    builder: SampleBuilder, episode: Episode, rng: np.random.Generator, patterns: Sequence[str] = PATTERNS
) -> list[Sample]:
    """One sample per pattern of ``patterns`` for an episode, each with a freshly sampled phrasing (and transition).

    Generation, terminal-state and explanation samples need a rollout that reaches its instruction, so they come
    only from successful episodes; the dynamics pattern uses any transition. Every pattern is drawn whether kept or
    not, so an ablation (``ground.patterns``) trains on the same phrasings and transitions as the full SFT.
    """
    states = normalise(episode.observations)
    actions = episode.actions.astype(np.int64)
    t = int(rng.integers(episode.length))
    samples = [builder.dynamics(states[t], int(actions[t]), states[t + 1])]
    if episode.success:
        phrasings = episode.instructions or [episode.instruction]
        pick = lambda: phrasings[int(rng.integers(len(phrasings)))]  # noqa: E731
        samples.append(builder.generation(pick(), states, actions))
        samples.append(builder.terminal(pick(), states[0], states[-1]))
        samples.append(builder.explanation(pick(), states, actions))
    keep = {PATTERNS.index(name) for name in patterns}
    return [s for s in samples if s.pattern in keep]


def collate(samples: Sequence[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad samples to the longest one; padded positions carry no targets and are masked out."""
    length = max(len(s) for s in samples)
    batch: dict[str, np.ndarray] = {}
    for name in _FIELDS:
        first = getattr(samples[0], name)
        fill = {"input_ids": pad_id, "action_targets": IGNORE, "kinds": TEXT}.get(name, 0)
        out = np.full((len(samples), length, *first.shape[1:]), fill, dtype=first.dtype)
        for i, sample in enumerate(samples):
            out[i, : len(sample)] = getattr(sample, name)
        batch[name] = out
    labels = np.full((len(samples), length), IGNORE, dtype=np.int64)
    mask = np.zeros((len(samples), length), dtype=np.int64)
    for i, sample in enumerate(samples):
        labels[i, : len(sample)] = sample.labels
        mask[i, : len(sample)] = 1
    batch["labels"], batch["attention_mask"] = labels, mask
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    tensors["kinds"] = tensors["kinds"].long()
    return tensors


def make_batches(
    samples: Sequence[Sample], batch_size: int, pad_id: int, rng: np.random.Generator
) -> list[dict[str, torch.Tensor]]:
    """Cut the samples into batches that each hold every pattern in its share, and shuffle the batch order.

    Each pattern is sorted by length and split into as many consecutive chunks as there are batches; batch i takes
    chunk i of every pattern. So every step carries state, action and text targets (one pattern per batch left
    three steps in four without action targets), and samples of a pattern meet others of similar length. The LM
    head still runs only where a text label exists (``compute_losses``).
    """
    n_batches = max(1, -(-len(samples) // batch_size))
    chunks: list[list[Sample]] = [[] for _ in range(n_batches)]
    for pattern in sorted({s.pattern for s in samples}):
        group = sorted((s for s in samples if s.pattern == pattern), key=len)
        for i, part in enumerate(np.array_split(np.arange(len(group)), n_batches)):
            chunks[i].extend(group[j] for j in part)
    batches = [collate(chunk, pad_id) for chunk in chunks if chunk]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]
