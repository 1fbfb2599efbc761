"""Named random streams: every stage derives its randomness from ``params.seed`` and a readable stream name.

    rng = seed_stream(params.seed, "collect.episodes")

A stream's key is a hash of its name, so two names give independent generators and adding a stream changes no
other. ``STREAMS`` lists the pipeline's names (a test checks their keys never collide).
"""

from __future__ import annotations

import hashlib

import numpy as np

STREAMS: tuple[str, ...] = (
    "collect.episodes",
    "ground.split",
    "ground.samples",
    "ground.diagnostics",
    "imagine.tasks.rephrase",
    "imagine.tasks.easy",
    "imagine.tasks.hard",
    "imagine.starts.rephrase",
    "imagine.starts.easy",
    "imagine.starts.hard",
    "train.policy",
    "train.q_sample",
    "evaluate.levels",
    "evaluate.given",
    "evaluate.suite",
    "benchmarks.oracle",
)


def stream_key(name: str) -> int:
    """A stable 64-bit key of a stream name (the same on every machine and Python)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def seed_sequence(seed: int, name: str, *index: int) -> np.random.SeedSequence:
    """The SeedSequence of stream ``name`` (and, e.g., a policy or level ``index``) under ``seed``."""
    return np.random.SeedSequence([seed, stream_key(name), *index])


def seed_stream(seed: int, name: str, *index: int) -> np.random.Generator:
    """A generator of stream ``name`` under ``seed``."""
    return np.random.default_rng(seed_sequence(seed, name, *index))


def seeds_of(seed: int, name: str, n: int, *index: int) -> list[int]:
    """``n`` 32-bit seeds (env resets, policies) of stream ``name``."""
    return [int(s) for s in seed_sequence(seed, name, *index).generate_state(n, dtype=np.uint32)]
