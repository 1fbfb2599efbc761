"""The scripted behaviour policy on hand-made states."""

import numpy as np

from kalm.tasks import COLOURS, RelationGoal
from kalm.tasks.behaviour import action_scores, behaviour_action, greedy_action

CORNERS = {"red": (-0.45, 0.55), "blue": (0.45, 0.55), "green": (-0.45, -0.15), "purple": (0.45, -0.15)}


def state(**positions) -> np.ndarray:
    layout = {**CORNERS, "cyan": (0.0, 0.2), **positions}
    return np.array([c for colour in COLOURS for c in layout[colour]], dtype=np.float32)


def test_pushes_the_source_ball_towards_the_target() -> None:
    # red far right of cyan, goal: red left of cyan -> push red along -x (action 0 * 8 + 2).
    obs = state(red=(0.4, 0.2), cyan=(-0.2, 0.2))
    assert greedy_action(obs, RelationGoal("red", "cyan", "left")) == 2


def test_prefers_a_push_predicted_to_succeed() -> None:
    obs = state(
        red=(0.33, -0.08), purple=(-0.45, 0.2)
    )  # red right of and in front of cyan; one push along -x puts it in front
    goal = RelationGoal("red", "cyan", "front")
    scores = action_scores(obs, goal)
    assert scores.shape == (40,) and scores.min() == -1.0
    assert greedy_action(obs, goal) == 2


def test_goes_around_a_ball_in_the_way() -> None:
    # The straight push along -x would end 0.153 from cyan, i.e. run into it: go diagonally instead.
    obs = state(red=(0.4, 0.2))
    action = greedy_action(obs, RelationGoal("red", "cyan", "left"))
    assert action // 8 == 0 and action % 8 in (5, 7)


def test_avoids_pushing_through_another_ball() -> None:
    # red directly in front of cyan; the target (behind cyan) is straight through cyan.
    obs = state(red=(0.0, -0.12))
    goal = RelationGoal("red", "cyan", "behind")
    action = greedy_action(obs, goal)
    assert action // 8 == 0 and action % 8 != 1  # not straight along +y into cyan


def test_epsilon_one_is_uniform_and_zero_is_greedy() -> None:
    obs = state(red=(0.4, 0.2), cyan=(-0.2, 0.2))
    goal = RelationGoal("red", "cyan", "left")
    rng = np.random.default_rng(0)
    random_actions = {behaviour_action(obs, goal, rng, 1.0) for _ in range(400)}
    assert len(random_actions) == 40
    assert {behaviour_action(obs, goal, rng, 0.0) for _ in range(20)} == {2}
