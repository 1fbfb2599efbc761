"""Success and reward of every goal type: the reference sample data and hand-made states."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from kalm.tasks import (
    COLOURS,
    AllOfGoal,
    GatherGoal,
    LineUpGoal,
    MoveGoal,
    RelationGoal,
    parse_goal,
    training_goals,
)
from tests.conftest import DATA

SAMPLE = json.loads((DATA / "kalm_sample_transitions.json").read_text())
FAR = {
    "red": (-0.45, 0.55),
    "blue": (0.45, 0.55),
    "green": (-0.45, -0.15),
    "purple": (0.45, -0.15),
    "cyan": (0, 0.2),
}


def state(**positions: tuple[float, float]) -> np.ndarray:
    """An observation with the named balls placed and the others in far corners."""
    layout = {**FAR, **positions}
    return np.array([c for colour in COLOURS for c in layout[colour]], dtype=np.float32)


def polar(r: float, degrees: float, centre=(0.0, 0.2)) -> tuple[float, float]:
    return (centre[0] + r * math.cos(math.radians(degrees)), centre[1] + r * math.sin(math.radians(degrees)))


@pytest.mark.parametrize("item", SAMPLE["rewards"], ids=lambda t: f"ep{t['episode']}-step{t['step']}")
def test_reference_sample_rewards_and_success(item: dict) -> None:
    goal = parse_goal(item["goal"])
    obs, nxt = np.array(item["obs"]), np.array(item["next_obs"])
    assert goal.is_success(obs, item["action"], nxt) == item["success"]
    assert goal.reward(obs, item["action"], nxt) == pytest.approx(item["reward"], abs=2e-3)


def test_reference_sample_covers_shaping_and_success() -> None:
    assert {t["success"] for t in SAMPLE["rewards"]} == {True, False}
    assert len(SAMPLE["rewards"]) == 60


@pytest.mark.parametrize(
    ("direction", "inside", "outside"),
    [
        ("behind", [46, 90, 134], [44, 136, 270]),
        ("left", [136, 180, 224], [134, 226, 0]),
        ("front", [226, 270, 314], [224, 316, 90]),
        ("right", [316, 0, 44], [314, 46, 180]),
    ],
)
def test_relation_sectors(direction: str, inside: list[float], outside: list[float]) -> None:
    goal = RelationGoal("red", "cyan", direction)
    for angle in inside:
        assert goal.holds(state(red=polar(0.3, angle))), angle
    for angle in outside:
        assert not goal.holds(state(red=polar(0.3, angle))), angle


def test_relation_sector_boundaries_are_half_open() -> None:
    diagonal = state(red=(0.25, 0.25), cyan=(0.0, 0.0))  # exactly 45 degrees
    assert RelationGoal("red", "cyan", "behind").holds(diagonal)
    assert not RelationGoal("red", "cyan", "right").holds(diagonal)
    assert RelationGoal("red", "cyan", "left").holds(state(red=(-0.3, 0.2)))  # exactly 180 degrees


def test_relation_distance_threshold_and_small_offsets() -> None:
    goal = RelationGoal("red", "cyan", "left")
    assert goal.holds(state(red=(-0.390, 0.2)))
    assert not goal.holds(state(red=(-0.392, 0.2)))
    # |dy| < 1e-3 counts as zero: exactly behind, not slightly right.
    assert RelationGoal("red", "cyan", "behind").holds(state(red=(0.0005, 0.5)))


def test_relation_reward_is_offset_target_shaping() -> None:
    goal = RelationGoal("red", "cyan", "left")
    before, after = state(red=(0.3, 0.2)), state(red=(0.1, 0.2))
    target_x = 0.0 - 0.195
    expected = 10 * (abs(0.3 - target_x) - abs(0.1 - target_x))
    assert goal.reward(before, 0, after) == pytest.approx(expected, abs=1e-5)
    assert goal.reward(after, 0, before) == pytest.approx(-expected, abs=1e-5)
    assert goal.reward(before, 0, state(red=(-0.2, 0.2))) == 100.0


@pytest.mark.parametrize(
    ("direction", "pushes"),
    [("behind", {1, 4, 5}), ("left", {2, 5, 7}), ("front", {3, 6, 7}), ("right", {0, 4, 6})],
)
def test_move_goal_judges_the_action(direction: str, pushes: set[int]) -> None:
    goal = MoveGoal("green", direction)
    s = state()
    for action in range(40):
        expected = action // 8 == 2 and action % 8 in pushes
        assert goal.is_success(s, action, s) == expected
        assert goal.reward(s, action, s) == float(expected)
    assert goal.level == "easy" and goal.ends_after_one_step


def test_all_of_counts_satisfied_relations_after_the_step() -> None:
    goal = AllOfGoal((RelationGoal("red", "cyan", "left"), RelationGoal("blue", "cyan", "right")))
    none = state()
    one = state(red=(-0.3, 0.2))
    both = state(red=(-0.3, 0.2), blue=(0.3, 0.2))
    assert goal.satisfied(none) == 0 and goal.satisfied(one) == 1 and goal.satisfied(both) == 2
    assert goal.reward(none, 0, one) == 10.0
    assert goal.reward(one, 0, none) == -10.0
    assert goal.reward(one, 0, one) == 0.0
    assert goal.reward(one, 0, both) == 100.0
    assert goal.is_success(none, 0, both) and not goal.is_success(both, 0, one)


def test_line_up_needs_each_pair_within_30_degrees_of_plus_x() -> None:
    goal = LineUpGoal(COLOURS)
    xs = [-0.4, -0.2, 0.0, 0.2, 0.4]
    row = np.array([c for x in xs for c in (x, 0.2)])
    assert goal.satisfied(row) == 4 and goal.is_success(row, 0, row)
    tilted = row.copy()
    tilted[3] = 0.2 + 0.2 * math.tan(math.radians(29.0))  # blue: 29 degrees above red, still in line
    assert goal.satisfied(tilted) == 4
    tilted[3] = 0.2 + 0.2 * math.tan(math.radians(31.0))  # red->blue at 31 degrees, blue->green at -31
    assert goal.satisfied(tilted) == 2
    reversed_row = np.array([c for x in xs[::-1] for c in (x, 0.2)])
    assert goal.satisfied(reversed_row) == 0
    assert goal.reward(reversed_row, 0, tilted) == 20.0
    assert goal.reward(tilted, 0, row) == 100.0


def test_gather_counts_balls_within_0325_of_green() -> None:
    goal = GatherGoal("green")
    centre = (0.0, 0.2)
    near = {
        c: polar(0.32, a, centre) for c, a in zip(("red", "blue", "purple", "cyan"), (0, 90, 180, 270), strict=True)
    }
    s = state(green=centre, **near)
    assert goal.satisfied(s) == 4 and goal.is_success(s, 0, s)
    s2 = state(green=centre, **{**near, "red": polar(0.33, 0, centre)})
    assert goal.satisfied(s2) == 3
    assert goal.reward(s2, 0, s) == 100.0
    assert goal.reward(s, 0, s2) == -10.0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "teleport"}, "type"),
        ({"src": "red"}, "type"),
        ({"type": "relation", "src": "pink", "dst": "blue", "direction": "left"}, "src"),
        ({"type": "relation", "src": "red", "dst": "red", "direction": "left"}, "dst"),
        ({"type": "relation", "src": "red", "dst": "blue", "direction": "up"}, "direction"),
        ({"type": "relation", "src": "red", "dst": "blue"}, "direction"),
        ({"type": "relation", "src": "red", "dst": "blue", "direction": "left", "speed": 1}, "speed"),
        ({"type": "move", "ball": "grey", "direction": "left"}, "ball"),
        (
            {
                "type": "all_of",
                "goals": [{"type": "relation", "src": "red", "dst": "blue", "direction": "left"}],
            },
            "goals",
        ),
        (
            {
                "type": "all_of",
                "goals": [{"type": "gather", "center": "green"}, {"type": "gather", "center": "red"}],
            },
            "goals[0].type",
        ),
        ({"type": "line_up", "order": ["red", "red"]}, "order"),
        ({"type": "line_up", "order": ["red", "olive"]}, "order"),
        ({"type": "gather", "center": "black"}, "center"),
    ],
)
def test_parse_goal_errors_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(field) + ": "):
        parse_goal(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "relation", "src": "red", "dst": "blue", "direction": "left"},
        {"type": "move", "ball": "cyan", "direction": "front"},
        {
            "type": "all_of",
            "goals": [
                {"type": "relation", "src": "red", "dst": "blue", "direction": "left"},
                {"type": "relation", "src": "green", "dst": "purple", "direction": "behind"},
            ],
        },
        {"type": "line_up", "order": ["red", "blue", "green", "purple", "cyan"]},
        {"type": "gather", "center": "green"},
    ],
)
def test_goal_spec_round_trip(spec: dict) -> None:
    goal = parse_goal(spec)
    assert goal.to_spec() == spec
    assert parse_goal(goal.to_json()) == goal
    assert goal.level == {"relation": "train", "move": "easy"}.get(spec["type"], "hard")


def test_training_goals_are_the_80_configurations() -> None:
    goals = training_goals()
    assert len(goals) == len(set(goals)) == 80
    assert {g.direction for g in goals} == {"behind", "left", "front", "right"}
