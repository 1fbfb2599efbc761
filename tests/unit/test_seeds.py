"""Named seed streams: distinct names never share a key or a sequence; the same name is the same stream."""

from __future__ import annotations

import numpy as np

from kalm.seeds import STREAMS, seed_stream, seeds_of, stream_key


def test_the_pipeline_streams_never_collide() -> None:
    keys = [stream_key(name) for name in STREAMS]
    assert len(set(keys)) == len(STREAMS)
    draws = {name: tuple(seed_stream(0, name).integers(2**32, size=4)) for name in STREAMS}
    assert len(set(draws.values())) == len(STREAMS)


def test_a_stream_is_reproducible_and_depends_on_seed_and_index() -> None:
    assert seeds_of(0, "collect.episodes", 5) == seeds_of(0, "collect.episodes", 5)
    assert seeds_of(0, "collect.episodes", 5)[:3] == seeds_of(0, "collect.episodes", 3)  # a prefix stream
    assert seeds_of(1, "collect.episodes", 5) != seeds_of(0, "collect.episodes", 5)
    assert seeds_of(0, "train.policy", 1, 0) != seeds_of(0, "train.policy", 1, 1)
    # Pinned: the committed data's seeds depend on it (blake2b, the same on every machine and Python).
    assert stream_key("collect.episodes") == 0x8332CC725787C55B
    a, b = seed_stream(0, "ground.split"), seed_stream(0, "ground.split")
    np.testing.assert_array_equal(a.permutation(10), b.permutation(10))
