"""The scripted behaviour policies on hand-made states."""

import numpy as np

from kalm.tasks import COLOURS, RelationGoal
from kalm.tasks.behaviour import POLICIES, action_scores, behaviour_action, legible_action, lookahead_action

CORNERS = {"red": (-0.45, 0.55), "blue": (0.45, 0.55), "green": (-0.45, -0.15), "purple": (0.45, -0.15)}
RIGHT, BEHIND, LEFT, FRONT, BEHIND_LEFT, FRONT_LEFT = 0, 1, 2, 3, 5, 7  # a % 8
RED, BLUE = 0, 1


def state(**positions) -> np.ndarray:
    layout = {**CORNERS, "cyan": (0.0, 0.2), **positions}
    return np.array([c for colour in COLOURS for c in layout[colour]], dtype=np.float32)


# --- legible (the default) --------------------------------------------------------------------------------------


def test_legible_pushes_the_source_ball_straight_towards_its_target() -> None:
    # target of "red left of cyan" = cyan - (0.195, 0) = (0.005, 0.2); red approaches from the left.
    obs = state(red=(-0.4, 0.2), cyan=(0.2, 0.2))
    assert legible_action(obs, RelationGoal("red", "cyan", "left")) == RED * 8 + RIGHT


def test_legible_takes_the_push_direction_nearest_the_way() -> None:
    # target of "red right of cyan" = (0.195, 0.2); the way from (0.4, 0.45) is (-0.205, -0.25): front-left.
    obs = state(red=(0.4, 0.45))
    assert legible_action(obs, RelationGoal("red", "cyan", "right")) == RED * 8 + FRONT_LEFT


def test_legible_goes_around_the_ball_in_the_way_on_its_own_side() -> None:
    # red right of cyan and a little behind it; its target (left of cyan) lies straight through cyan.
    obs = state(red=(0.45, 0.25))
    assert legible_action(obs, RelationGoal("red", "cyan", "left")) == RED * 8 + BEHIND_LEFT
    obs = state(red=(0.45, 0.15))  # a little in front of it: around the front
    assert legible_action(obs, RelationGoal("red", "cyan", "left")) == RED * 8 + FRONT_LEFT


def test_legible_moves_the_reference_ball_off_the_wall_when_the_target_is_off_the_workbench() -> None:
    # "red behind blue" with blue against the back wall (y 0.55): the target y 0.745 is off the table.
    obs = state(red=(0.0, 0.0), blue=(0.3, 0.55))
    assert legible_action(obs, RelationGoal("red", "blue", "behind")) == BLUE * 8 + FRONT
    obs = state(red=(0.0, 0.0), blue=(0.3, 0.3))  # with room behind blue, red is pushed
    assert legible_action(obs, RelationGoal("red", "blue", "behind")) // 8 == RED


def test_epsilon_one_is_uniform_and_zero_is_greedy() -> None:
    obs = state(red=(-0.4, 0.2), cyan=(0.2, 0.2))
    goal = RelationGoal("red", "cyan", "left")
    rng = np.random.default_rng(0)
    assert len({behaviour_action(obs, goal, rng, 1.0) for _ in range(400)}) == 40
    assert {behaviour_action(obs, goal, rng, 0.0) for _ in range(20)} == {RED * 8 + RIGHT}
    assert set(POLICIES) == {"legible", "lookahead"}


# --- look-ahead (the earlier default) ---------------------------------------------------------------------------


def test_lookahead_pushes_the_source_ball_towards_the_target() -> None:
    obs = state(red=(0.4, 0.2), cyan=(-0.2, 0.2))
    assert lookahead_action(obs, RelationGoal("red", "cyan", "left")) == LEFT
    assert behaviour_action(obs, RelationGoal("red", "cyan", "left"), np.random.default_rng(0), 0.0, "lookahead") == 2


def test_lookahead_prefers_a_push_predicted_to_succeed() -> None:
    obs = state(red=(0.33, -0.08), purple=(-0.45, 0.2))  # one push along -x puts red in front of cyan
    goal = RelationGoal("red", "cyan", "front")
    scores = action_scores(obs, goal)
    assert scores.shape == (40,) and scores.min() == -1.0
    assert lookahead_action(obs, goal) == LEFT


def test_lookahead_goes_around_a_ball_in_the_way() -> None:
    obs = state(red=(0.4, 0.2))  # the straight push along -x would run into cyan
    action = lookahead_action(obs, RelationGoal("red", "cyan", "left"))
    assert action // 8 == RED and action % 8 in (5, 7)


def test_lookahead_avoids_pushing_through_another_ball() -> None:
    obs = state(red=(0.0, -0.12))  # the target (behind cyan) is straight through cyan
    action = lookahead_action(obs, RelationGoal("red", "cyan", "behind"))
    assert action // 8 == RED and action % 8 != BEHIND
