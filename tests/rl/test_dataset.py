"""Episodes -> d3rlpy buffers: discrete actions, one embedding per instruction, terminals vs timeouts, mixing."""

from __future__ import annotations

import d3rlpy
import numpy as np
import pytest
from d3rlpy.dataset import BasicTransitionPicker

from kalm.data import Episode
from kalm.rl.dataset import build_buffer, goal_observations
from kalm.rl.encoder import describe_encoder
from kalm.tasks.world import OBS_DIM


def episode(i: int, length: int, terminated: bool, instruction: str, source: str = "real") -> Episode:
    rng = np.random.default_rng(i)
    return Episode(
        episode_id=i,
        level="train",
        source=source,
        goal='{"type":"relation","src":"red","dst":"blue","direction":"left"}',
        instruction=instruction,
        observations=rng.uniform(-0.4, 0.4, size=(length + 1, 10)).astype(np.float32),
        actions=rng.integers(0, 8, size=length).astype(np.int16),  # ids below 8 only: action_size must stay 40
        rewards=rng.normal(size=length).astype(np.float32),
        success=terminated,
        terminated=terminated,
        seed=i,
    )


@pytest.fixture
def embeddings() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {t: rng.normal(size=6).astype(np.float32) for t in ("push red left of blue", "move red left of blue")}


def test_discrete_40_actions_declared_and_terminals_apart_from_timeouts(embeddings: dict) -> None:
    done, cut = episode(0, 3, True, "push red left of blue"), episode(1, 2, False, "move red left of blue")
    buffer = build_buffer([done, cut], [], embeddings)
    assert buffer.dataset_info.action_space == d3rlpy.ActionSpace.DISCRETE
    assert buffer.dataset_info.action_size == 40
    assert buffer.transition_count == 5  # the truncated episode's last state is a next observation only
    batch = buffer.batch_from_indices(np.arange(5))
    np.testing.assert_array_equal(batch.terminals.ravel(), [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(batch.actions.ravel(), np.concatenate([done.actions, cut.actions]))
    assert batch.observations.shape == (5, OBS_DIM + 6) and batch.observations.dtype == np.float32
    np.testing.assert_array_equal(batch.next_observations[2], 0.0)  # terminal: never bootstrapped from
    np.testing.assert_allclose(batch.next_observations[4, :OBS_DIM], cut.observations[2])  # timeout: last state
    np.testing.assert_allclose(batch.next_observations[4, OBS_DIM:], embeddings[cut.instruction])


def test_vectorised_batches_equal_d3rlpys_transition_picker(embeddings: dict) -> None:
    episodes = [episode(i, 2 + i, i % 2 == 0, sorted(embeddings)[i % 2]) for i in range(4)]
    buffer = build_buffer(episodes, [], embeddings)
    picker = BasicTransitionPicker()
    expected = [picker(ep, t) for ep in buffer.episodes for t in range(ep.transition_count)]
    batch = buffer.batch_from_indices(np.arange(buffer.transition_count))
    assert len(expected) == buffer.transition_count
    for i, tr in enumerate(expected):
        np.testing.assert_allclose(batch.observations[i], tr.observation)
        np.testing.assert_allclose(batch.next_observations[i], tr.next_observation)
        assert batch.actions[i, 0] == tr.action[0] and batch.rewards[i, 0] == pytest.approx(tr.reward[0])
        assert batch.terminals[i, 0] == tr.terminal


def test_same_instruction_same_goal_embedding(goal_encoder) -> None:
    texts = ["Push the red ball to the left of the blue ball", "Push the red ball to the left of the blue ball"]
    vectors = goal_encoder.encode([*texts, "Move the cyan ball behind the green ball"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], vectors[1])
    assert not np.allclose(vectors[0], vectors[2])
    states = np.zeros((4, 10), dtype=np.float32)
    obs = goal_observations(states, vectors[0])
    assert obs.shape == (4, 394) and (obs[:, 10:] == vectors[0]).all()


def test_balanced_mix_draws_half_of_each_batch_from_imagined(embeddings: dict) -> None:
    real = [episode(i, 10, False, "push red left of blue") for i in range(5)]  # 50 transitions
    imagined = [episode(10, 2, True, "move red left of blue", source="imagined")]  # 2 transitions
    np.random.seed(0)
    balanced = build_buffer(real, imagined, embeddings, mix="balanced")
    assert balanced.group_sizes == [50, 2]
    idx = balanced.sample_indices(32)
    assert (idx >= 50).sum() == 16
    uniform = build_buffer(real, imagined, embeddings, mix="uniform")
    assert (uniform.sample_indices(1000) >= 50).mean() < 0.15
    with pytest.raises(ValueError, match="mix"):
        build_buffer(real, imagined, embeddings, mix="half")


def test_encoder_names_are_checked() -> None:
    assert describe_encoder("all-minilm-l6-v2") is None and describe_encoder("grounded") is None
    assert "not all-minilm-l6-v2" in describe_encoder("bert-base-cased")
