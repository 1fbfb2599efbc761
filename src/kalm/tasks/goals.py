"""Goals of every task level: typed specs, success tests and rewards as pure numpy functions.

Conventions follow KALM (`reference/clevr-robot.md` §11): object i = COLOURS[i]; BEHIND = +y, FRONT = -y,
LEFT = -x, RIGHT = +x. An observation is float[10] = (x, y) of the five balls in colour order. Every test is
judged on the post-step observation; ``prev_obs`` only enters the shaping terms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kalm.tasks.world import COLOURS, DIRECTIONS, UNIT

# Push-direction numbers (a % 8) that count as a one-step move in each direction (KALM step_level_a).
MOVE_PUSHES: dict[str, frozenset[int]] = {
    "behind": frozenset({1, 4, 5}),
    "left": frozenset({2, 5, 7}),
    "front": frozenset({3, 6, 7}),
    "right": frozenset({0, 4, 6}),
}
SECTORS: dict[str, tuple[float, float]] = {  # angle of (src - dst) in degrees, [lo, hi)
    "behind": (45.0, 135.0),
    "left": (135.0, 225.0),
    "front": (225.0, 315.0),
}
RELATION_MAX_DIST = 0.39 + 1e-3  # surface gap < one radius
TARGET_OFFSET = 0.195  # reward target: half the success radius beyond the reference ball
LINE_UP_MIN_COS = math.cos(math.radians(30.0))
GATHER_RADIUS = 0.325  # 2.5 radii
SUCCESS_REWARD = 100.0
SHAPING_SCALE = 10.0


def ball_xy(obs: np.ndarray, colour: str) -> np.ndarray:
    """Return the (x, y) position of the ball of ``colour`` in a 10-value observation."""
    i = COLOURS.index(colour)
    return np.asarray(obs[2 * i : 2 * i + 2], dtype=np.float64)


def relation_holds_batch(src_xy: np.ndarray, dst_xy: np.ndarray, direction: str) -> np.ndarray:
    """KALM's relation test on (..., 2) arrays: src in the 90-degree sector of ``direction`` around dst,
    closer than 0.391. Offset components under 1e-3 count as zero, as in the reference code."""
    delta = np.asarray(src_xy, dtype=np.float64) - np.asarray(dst_xy, dtype=np.float64)
    delta = np.where(np.abs(delta) < 1e-3, 0.0, delta)
    dist = np.hypot(delta[..., 0], delta[..., 1])
    angle = np.degrees(np.arctan2(delta[..., 1], delta[..., 0])) % 360.0
    if direction == "right":
        in_sector = (angle >= 315.0) | (angle < 45.0)
    else:
        lo, hi = SECTORS[direction]
        in_sector = (angle >= lo) & (angle < hi)
    return in_sector & (dist > 0.0) & (dist < RELATION_MAX_DIST)


def relation_holds(obs: np.ndarray, src: str, dst: str, direction: str) -> bool:
    """KALM's relation test on one observation (see ``relation_holds_batch``)."""
    return bool(relation_holds_batch(ball_xy(obs, src), ball_xy(obs, dst), direction))


@dataclass(frozen=True)
class Goal:
    """Base of all goals. Subclasses implement ``is_success``, ``reward`` and ``to_spec``."""

    level: ClassVar[str]
    ends_after_one_step: ClassVar[bool] = False
    # What reaching the goal pays: the return a return-conditioned policy (the decision transformer) is asked for.
    success_reward: ClassVar[float] = SUCCESS_REWARD

    def is_success(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> bool:
        raise NotImplementedError

    def reward(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> float:
        raise NotImplementedError

    def to_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        """The goal spec as compact JSON (the ``goal`` column of the episode format)."""
        return json.dumps(self.to_spec(), separators=(",", ":"))


@dataclass(frozen=True)
class RelationGoal(Goal):
    """Move ``src`` so that it lies ``direction`` of ``dst`` (training and rephrase levels)."""

    src: str
    dst: str
    direction: str
    level: ClassVar[str] = "train"

    def holds(self, obs: np.ndarray) -> bool:
        """Whether the relation holds in ``obs``."""
        return relation_holds(obs, self.src, self.dst, self.direction)

    def is_success(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> bool:
        return self.holds(next_obs)

    def target(self, obs: np.ndarray) -> np.ndarray:
        """The shaping target T = p_dst + 0.195 * u_direction."""
        return ball_xy(obs, self.dst) + TARGET_OFFSET * np.asarray(UNIT[self.direction])

    def reward(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> float:
        if self.holds(next_obs):
            return SUCCESS_REWARD
        before = np.linalg.norm(ball_xy(prev_obs, self.src) - self.target(prev_obs))
        after = np.linalg.norm(ball_xy(next_obs, self.src) - self.target(next_obs))
        return float(SHAPING_SCALE * (before - after))

    def to_spec(self) -> dict[str, Any]:
        return {"type": "relation", "src": self.src, "dst": self.dst, "direction": self.direction}


@dataclass(frozen=True)
class MoveGoal(Goal):
    """Push ``ball`` one step in ``direction`` (unseen easy level): judged on the action, one step long."""

    ball: str
    direction: str
    level: ClassVar[str] = "easy"
    ends_after_one_step: ClassVar[bool] = True
    success_reward: ClassVar[float] = 1.0

    def is_success(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> bool:
        action = int(action)
        return action // 8 == COLOURS.index(self.ball) and action % 8 in MOVE_PUSHES[self.direction]

    def reward(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> float:
        return self.success_reward if self.is_success(prev_obs, action, next_obs) else 0.0

    def to_spec(self) -> dict[str, Any]:
        return {"type": "move", "ball": self.ball, "direction": self.direction}


@dataclass(frozen=True)
class HardGoal(Goal):
    """Unseen hard level: success when every sub-item holds; reward 10 * change in satisfied items."""

    level: ClassVar[str] = "hard"

    def satisfied(self, obs: np.ndarray) -> int:
        """How many sub-items hold in ``obs``."""
        raise NotImplementedError

    @property
    def n_items(self) -> int:
        raise NotImplementedError

    def is_success(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> bool:
        return self.satisfied(next_obs) == self.n_items

    def reward(self, prev_obs: np.ndarray, action: int, next_obs: np.ndarray) -> float:
        after = self.satisfied(next_obs)
        if after == self.n_items:
            return SUCCESS_REWARD
        return SHAPING_SCALE * float(after - self.satisfied(prev_obs))


@dataclass(frozen=True)
class AllOfGoal(HardGoal):
    """2 or 3 relations that must hold at once."""

    goals: tuple[RelationGoal, ...]

    @property
    def n_items(self) -> int:
        return len(self.goals)

    def satisfied(self, obs: np.ndarray) -> int:
        return sum(g.holds(obs) for g in self.goals)

    def to_spec(self) -> dict[str, Any]:
        return {"type": "all_of", "goals": [g.to_spec() for g in self.goals]}


@dataclass(frozen=True)
class LineUpGoal(HardGoal):
    """Balls in ``order`` from left to right: each consecutive pair within 30 degrees of +x."""

    order: tuple[str, ...]

    @property
    def n_items(self) -> int:
        return len(self.order) - 1

    def satisfied(self, obs: np.ndarray) -> int:
        count = 0
        for left, right in zip(self.order, self.order[1:], strict=False):
            d = ball_xy(obs, right) - ball_xy(obs, left)
            norm = float(np.hypot(d[0], d[1]))
            count += norm > 0.0 and d[0] / norm >= LINE_UP_MIN_COS
        return count

    def to_spec(self) -> dict[str, Any]:
        return {"type": "line_up", "order": list(self.order)}


@dataclass(frozen=True)
class GatherGoal(HardGoal):
    """Every other ball within 0.325 of the ``center`` ball."""

    center: str

    @property
    def n_items(self) -> int:
        return len(COLOURS) - 1

    def satisfied(self, obs: np.ndarray) -> int:
        c = ball_xy(obs, self.center)
        return sum(
            float(np.linalg.norm(ball_xy(obs, other) - c)) < GATHER_RADIUS for other in COLOURS if other != self.center
        )

    def to_spec(self) -> dict[str, Any]:
        return {"type": "gather", "center": self.center}


GOAL_TYPES: tuple[str, ...] = ("relation", "move", "all_of", "line_up", "gather")
_FIELDS: dict[str, tuple[str, ...]] = {
    "relation": ("type", "src", "dst", "direction"),
    "move": ("type", "ball", "direction"),
    "all_of": ("type", "goals"),
    "line_up": ("type", "order"),
    "gather": ("type", "center"),
}


def _field(spec: Mapping[str, Any], name: str, allowed: tuple[str, ...], where: str) -> str:
    value = spec[name]
    if value not in allowed:
        raise ValueError(f"{where}{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def parse_goal(spec: Mapping[str, Any] | str, where: str = "") -> Goal:
    """Build a ``Goal`` from a spec dict (or its JSON text); a bad spec raises ``ValueError`` naming the field.

    ``where`` prefixes error messages (e.g. ``"goals[1]."``) for nested specs.
    """
    if isinstance(spec, str):
        spec = json.loads(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where or 'goal'}: expected a mapping, got {type(spec).__name__}")
    if "type" not in spec:
        raise ValueError(f"{where}type: missing; one of {', '.join(GOAL_TYPES)}")
    kind = _field(spec, "type", GOAL_TYPES, where)
    expected = _FIELDS[kind]
    for name in spec:
        if name not in expected:
            raise ValueError(f"{where}{name}: unknown field for type {kind}; allowed: {', '.join(expected)}")
    for name in expected:
        if name not in spec:
            raise ValueError(f"{where}{name}: missing for type {kind}")
    if kind == "relation":
        src = _field(spec, "src", COLOURS, where)
        dst = _field(spec, "dst", COLOURS, where)
        if src == dst:
            raise ValueError(f"{where}dst: must differ from src ({src!r})")
        return RelationGoal(src, dst, _field(spec, "direction", DIRECTIONS, where))
    if kind == "move":
        return MoveGoal(_field(spec, "ball", COLOURS, where), _field(spec, "direction", DIRECTIONS, where))
    if kind == "all_of":
        subs = spec["goals"]
        if not isinstance(subs, list | tuple) or not 2 <= len(subs) <= 3:
            raise ValueError(f"{where}goals: expected a list of 2 or 3 relation goals")
        goals = []
        for i, sub in enumerate(subs):
            goal = parse_goal(sub, f"{where}goals[{i}].")
            if not isinstance(goal, RelationGoal):
                raise ValueError(f"{where}goals[{i}].type: only relation goals can be combined")
            goals.append(goal)
        return AllOfGoal(tuple(goals))
    if kind == "line_up":
        order = spec["order"]
        if not isinstance(order, list | tuple) or len(order) < 2 or len(set(order)) != len(order):
            raise ValueError(f"{where}order: expected a list of at least 2 distinct colours")
        for colour in order:
            if colour not in COLOURS:
                raise ValueError(f"{where}order: {colour!r} is not one of {', '.join(COLOURS)}")
        return LineUpGoal(tuple(order))
    return GatherGoal(_field(spec, "center", COLOURS, where))


def training_goals() -> list[RelationGoal]:
    """The 80 training goals: 20 ordered (src, dst) pairs x 4 directions, in a fixed order."""
    return [
        RelationGoal(src, dst, direction)
        for src in COLOURS
        for dst in COLOURS
        if src != dst
        for direction in DIRECTIONS
    ]
