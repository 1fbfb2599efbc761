"""The four SFT patterns: slot layout, which position predicts what, and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kalm.config import ConfigError, with_overrides
from kalm.data import Episode
from kalm.llm.batches import collate, episode_samples, make_batches
from kalm.llm.numeric import NumericIO, anchor_states, denormalise, normalise
from kalm.llm.prompts import ACTION, BALL, IGNORE, STATE, TEXT, SampleBuilder

STATE_ID, ACTION_ID, EOS = 1000, 1001, 2


def tokenize(text: str) -> list[int]:
    """A stand-in tokenizer: one id per character (no special tokens)."""
    return [ord(c) % 500 + 3 for c in text]


BUILDER = SampleBuilder(tokenize, STATE_ID, ACTION_ID, EOS)
RNG = np.random.default_rng(0)
STATES = RNG.uniform(-1, 1, (4, 10)).astype(np.float32)  # T = 3
ACTIONS = np.array([5, 17, 39])


def test_generation_layout_and_targets() -> None:
    s = BUILDER.generation("Push the red ball left the blue ball", STATES, ACTIONS)
    slots = np.flatnonzero(s.kinds != TEXT)
    assert list(s.kinds[slots]) == [STATE, ACTION, STATE, ACTION, STATE, ACTION, STATE]
    assert slots[0] == len(s) - 7 and list(s.input_ids[slots[:2]]) == [STATE_ID, ACTION_ID]
    np.testing.assert_array_equal(s.state_inputs[slots[::2]], STATES)
    np.testing.assert_array_equal(s.action_inputs[slots[1::2]], ACTIONS)
    # s_0 from the last prompt token, a_t from s_t's slot, s_t+1 from a_t's slot.
    assert list(np.flatnonzero(s.state_mask)) == [slots[0] - 1, *slots[1::2]]
    np.testing.assert_array_equal(s.state_targets[s.state_mask], STATES)
    assert list(np.flatnonzero(s.action_targets != IGNORE)) == list(slots[::2][:3])
    np.testing.assert_array_equal(s.action_targets[slots[::2][:3]], ACTIONS)
    assert np.all(s.labels == IGNORE)
    assert tokenize("Instruction: Push the red ball left the blue ball.\nTrajectory:")[-5:] == list(
        s.input_ids[slots[0] - 5 : slots[0]]
    )


def test_ball_slots_give_each_state_a_position_per_ball_and_predict_from_the_last() -> None:
    balls = SampleBuilder(tokenize, STATE_ID, ACTION_ID, EOS, ball_slots=True)
    s = balls.generation("Push the red ball left the blue ball", STATES, ACTIONS)
    one_state = [BALL, BALL + 1, BALL + 2, BALL + 3, STATE]
    slots = np.flatnonzero(s.kinds != TEXT)
    assert list(s.kinds[slots]) == one_state + [ACTION] + one_state + [ACTION] + one_state + [ACTION] + one_state
    assert set(s.input_ids[s.kinds >= BALL]) == {STATE_ID}
    for t, start in enumerate(slots[::6]):  # every ball position of s_t carries the whole s_t
        np.testing.assert_array_equal(s.state_inputs[start : start + 5], np.repeat(STATES[t : t + 1], 5, axis=0))
    # a_t is read from s_t's last ball (its STATE slot), s_t+1 from a_t's slot, as with one slot per state.
    np.testing.assert_array_equal(s.action_targets[s.kinds == STATE][:3], ACTIONS)
    assert list(np.flatnonzero(s.action_targets != IGNORE)) == list(np.flatnonzero(s.kinds == STATE)[:3])
    assert list(np.flatnonzero(s.state_mask)) == [slots[0] - 1, *np.flatnonzero(s.kinds == ACTION)]
    np.testing.assert_array_equal(anchor_states(*map(torch.from_numpy, (s.kinds.astype(np.int64), s.state_inputs)))
                                  [torch.from_numpy(s.kinds == ACTION)].numpy(), STATES[:3])  # fmt: skip


def test_a_ball_slot_reads_its_own_colour_and_coordinates_only() -> None:
    colours = torch.randn(5, 8)
    numeric = NumericIO(8, word_vectors=(colours, torch.zeros(8, 8)), state_slots="balls")
    kinds = torch.tensor([[BALL, BALL + 1, BALL + 2, BALL + 3, STATE]])
    state = torch.from_numpy(STATES[:1]).expand(5, 10)[None]
    moved = state.clone()
    moved[..., 4:6] += 0.5  # ball 2's (x, y)
    tokens = torch.zeros(1, 5, 8)
    a, b = (numeric.embed(tokens, kinds, x, torch.zeros(1, 5, dtype=torch.long))[0] for x in (state, moved))
    assert [not torch.equal(a[i], b[i]) for i in range(5)] == [False, False, True, False, False]
    with torch.no_grad():
        numeric.state_in.weight.zero_()
    at_zero = numeric.embed(tokens, kinds, state, torch.zeros(1, 5, dtype=torch.long))[0]
    torch.testing.assert_close(at_zero, colours)  # without the coordinate map: the colour words, in colour order


def test_pair_features_are_every_pairs_offset_and_distance() -> None:
    from kalm.llm.numeric import slot_features

    states = torch.from_numpy(STATES[:2])
    features = slot_features(states, "pairs")
    assert features.shape == (2, 10 + 10 * 2 + 10)  # coordinates, 10 pairs' (dx, dy), their distances
    balls = STATES[:2].reshape(2, 5, 2)
    np.testing.assert_allclose(features[:, 10:12].numpy(), balls[:, 0] - balls[:, 1], atol=1e-6)  # red - blue
    np.testing.assert_allclose(features[:, 28:30].numpy(), balls[:, 3] - balls[:, 4], atol=1e-6)  # purple - cyan
    np.testing.assert_allclose(features[:, 39].numpy(), np.linalg.norm(balls[:, 3] - balls[:, 4], axis=-1), atol=1e-6)
    assert NumericIO(8, state_features="pairs").state_in.in_features == 40


def test_relation_features_are_the_goals_own_relation_test() -> None:
    from kalm.llm.numeric import slot_features
    from kalm.tasks.goals import relation_holds
    from kalm.tasks.world import COLOURS, DIRECTIONS

    raw = np.array([0.0, 0.0, 0.0, 0.3, 0.3, 0.0, -0.3, 0.0, 0.0, -0.3], dtype=np.float32)  # red amid the others
    features = slot_features(torch.from_numpy(normalise(raw[None])), "relations")[0, 10:].numpy()
    pairs = [(s, d) for s in COLOURS for d in COLOURS if s != d]
    expected = [relation_holds(raw, s, d, k) for s, d in pairs for k in DIRECTIONS]
    assert features.tolist() == [float(x) for x in expected] and sum(expected) == 8  # red-x and x-red, 4 each
    assert features[DIRECTIONS.index("front")] == 1.0  # red is in front of blue (blue at +y: behind red)


def test_dynamics_and_terminal_predict_from_the_last_position() -> None:
    d = BUILDER.dynamics(STATES[1], 17, STATES[2])
    assert list(d.kinds[d.kinds != TEXT]) == [STATE, ACTION]
    assert list(np.flatnonzero(d.state_mask)) == [len(d) - 1]
    np.testing.assert_array_equal(d.state_targets[-1], STATES[2])
    assert np.all(d.action_targets == IGNORE) and np.all(d.labels == IGNORE)
    t = BUILDER.terminal("Keep the red ball behind the cyan ball", STATES[0], STATES[-1])
    assert list(t.kinds[t.kinds != TEXT]) == [STATE]
    np.testing.assert_array_equal(t.state_targets[-1], STATES[-1])
    assert t.state_mask.sum() == 1 and t.state_mask[-1]


def test_explanation_scores_only_the_answer() -> None:
    answer = " Push the red ball left the blue ball."
    s = BUILDER.explanation("Push the red ball left the blue ball", STATES, ACTIONS)
    scored = np.flatnonzero(s.labels != IGNORE)
    answer_ids = tokenize(answer) + [EOS]
    # Each scored position predicts the next token: from the prompt's last token to the answer's EOS.
    assert list(s.labels[scored]) == answer_ids
    assert scored[0] == len(s) - len(answer_ids) - 1 and s.labels[-1] == IGNORE
    assert not s.state_mask.any() and np.all(s.action_targets == IGNORE)
    prefix = BUILDER.explanation(None, STATES, ACTIONS)
    np.testing.assert_array_equal(prefix.input_ids, s.input_ids[: len(prefix)])


def test_every_batch_mixes_the_patterns_trimmed_to_the_longest() -> None:
    samples = [BUILDER.generation("go", STATES[: t + 1], ACTIONS[:t]) for t in (1, 2, 3, 3)]
    samples += [BUILDER.dynamics(STATES[0], 3, STATES[1]) for _ in range(4)]
    batches = make_batches(samples, 4, pad_id=0, rng=np.random.default_rng(0))
    assert len(batches) == 2 and sorted(len(b["input_ids"]) for b in batches) == [4, 4]
    for batch in batches:
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())
        for row, n in enumerate(lengths.tolist()):
            assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
            assert not batch["state_mask"][row, n:].any() and (batch["labels"][row, n:] == IGNORE).all()
        # every step carries action targets (generation) and dynamics state targets: two of each pattern
        assert (batch["action_targets"] != IGNORE).any(dim=1).sum() == 2
    # the shortest generation samples share a batch (length-sorted within each pattern)
    short = [b for b in batches if (b["action_targets"] != IGNORE).sum() == 1 + 2]
    assert len(short) == 1


def test_an_ablation_keeps_only_its_patterns_with_the_full_sfts_phrasings_and_transitions(tiny_params) -> None:
    episode = Episode(
        episode_id=0, level="train", source="offline", goal="{}", instruction="push red left",
        instructions=["push red left", "move the red ball left", "red ball to the left"],
        observations=STATES, actions=ACTIONS.astype(np.int16), rewards=np.zeros(3, np.float32),
        success=True, terminated=True, seed=0,
    )  # fmt: skip
    full = episode_samples(BUILDER, episode, np.random.default_rng(1))
    assert [s.pattern for s in full] == [1, 0, 2, 3]
    ablated = episode_samples(BUILDER, episode, np.random.default_rng(1), ["generation", "terminal"])
    assert [s.pattern for s in ablated] == [0, 2]
    for sample in ablated:  # the same draws as the full SFT's samples of these patterns
        twin = next(s for s in full if s.pattern == sample.pattern)
        assert np.array_equal(sample.input_ids, twin.input_ids)
    with pytest.raises(ConfigError, match="twice"):
        with_overrides(tiny_params, {"ground.patterns": ["dynamics", "dynamics"]}, "test")
    with pytest.raises(ConfigError, match="patterns"):
        with_overrides(tiny_params, {"ground.patterns": ["rollout"]}, "test")
    with pytest.raises(ConfigError, match="patterns"):
        with_overrides(tiny_params, {"ground.patterns": []}, "test")


def test_anchor_is_the_latest_state_slot() -> None:
    s = BUILDER.generation("go", STATES, ACTIONS)
    batch = collate([s], pad_id=0)
    anchors = anchor_states(batch["kinds"], batch["state_inputs"])[0].numpy()
    slots = np.flatnonzero(s.kinds != TEXT)
    assert np.all(anchors[: slots[0]] == 0)
    for t, (state_slot, action_slot) in enumerate(zip(slots[::2], slots[1::2], strict=False)):
        np.testing.assert_array_equal(anchors[state_slot], STATES[t])
        np.testing.assert_array_equal(anchors[action_slot], STATES[t])


def test_normalisation_round_trip() -> None:
    raw = np.array([[-0.6, -0.3, 0.6, 0.7, 0.0, 0.2, 0.1, 0.1, -0.2, 0.5]], dtype=np.float32)
    norm = normalise(raw)
    np.testing.assert_allclose(norm[0, :4], [-1, -1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(denormalise(norm), raw, atol=1e-6)


def test_action_displacement_is_each_actions_mean_change_where_an_action_precedes() -> None:
    import torch

    from kalm.llm.numeric import RESIDUAL_SCALE, NumericIO, latest_actions

    numeric = NumericIO(8, residual_state=True, action_displacement=True)
    states = [STATES[:3], STATES[1:4]]  # raw (T+1, 10)
    actions = [np.array([3, 5]), np.array([3, 3])]
    numeric.set_displacement(states, actions)
    changes = [np.diff(normalise(s), axis=0) for s in states]
    expected_3 = np.mean([changes[0][0], changes[1][0], changes[1][1]], axis=0) / RESIDUAL_SCALE
    np.testing.assert_allclose(numeric.displacement.weight[3].detach().numpy(), expected_3, rtol=1e-5)
    np.testing.assert_allclose(numeric.displacement.weight[0].detach().numpy(), 0.0)  # never taken: no change
    anchor = torch.from_numpy(normalise(STATES[:2]))
    with torch.no_grad():  # the head itself is zero
        moved = numeric.predict_state(torch.zeros(2, 8), anchor, torch.tensor([3, -1]))
    np.testing.assert_allclose(moved[0].numpy(), anchor[0].numpy() + RESIDUAL_SCALE * expected_3, rtol=1e-5)
    np.testing.assert_allclose(moved[1].numpy(), anchor[1].numpy())  # no action before it (terminal pattern)
    sample = BUILDER.generation("go", STATES[:3], ACTIONS[:2])
    batch = collate([sample], pad_id=0)
    latest = latest_actions(batch["kinds"], batch["action_inputs"])[0].numpy()
    slots = np.flatnonzero(sample.kinds == ACTION)
    assert (latest[: slots[0]] == -1).all() and latest[slots[0]] == ACTIONS[0] and latest[-1] == ACTIONS[1]
