"""The scripted, goal-directed behaviour policies that record the offline data (DESIGN §4).

The paper does not state its behaviour policy. Two are offered (``collect.policy``):

- ``legible`` (default): push the source ball along the one of the 8 push directions nearest to the way to its
  reward target (the reference ball + 0.195 in the goal's direction). Two rules handle what it cannot do that way:
  when that target lies off the workbench, the reference ball is pushed away from the wall first; when another ball
  lies on the straight way, the source ball aims beside that ball instead. Each action is a function of the goal's
  geometry and of the ball in the way, which on this crowded table (five balls of radius 0.13) decides 83 % of
  steps: an MLP handed the geometry predicts it at 0.23-0.51 held out (``benchmarks/action_ceiling.py``); BC
  on its data succeeds far more often than on the look-ahead policy's (``benchmarks/offline_rl.py policies``).
- ``lookahead``: for each of the 40 actions predict where the pushed ball ends (a free push moves a ball 0.247
  along its direction, clipped to the workbench) and score the result: a predicted success is best; otherwise the
  distance of the source ball to its target plus penalties for an occupied pusher side or a blocked path. It
  succeeds as often, but its action is an argmin over the scene that an MLP imitates at ~0.3 held-out accuracy
  (``reference/learnability.md``).

With probability ``epsilon`` either policy takes a uniformly random action.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kalm.tasks.goals import TARGET_OFFSET, RelationGoal, relation_holds_batch
from kalm.tasks.world import AREA_HIGH, AREA_LOW, BALL_RADIUS, COLOURS, N_ACTIONS, PUSH_DIRECTIONS, PUSH_OFFSET, UNIT

_N_BALLS = len(COLOURS)
_UNIT_PUSHES = PUSH_DIRECTIONS / np.linalg.norm(PUSH_DIRECTIONS, axis=1, keepdims=True)
# The axis push (a % 8) opposite each goal direction: moves the reference ball away from the wall it is against.
_AWAY_FROM = {"behind": 3, "front": 1, "left": 0, "right": 2}
# A ball closer than this to the straight way of the source ball's centre is in the way (touching + a margin).
IN_THE_WAY = 2 * BALL_RADIUS + 0.05
# How far beside a ball in the way the source ball aims (its centre passes clear of it).
DETOUR = IN_THE_WAY + 0.05


def reward_target(balls: np.ndarray, goal: RelationGoal) -> np.ndarray:
    """Where the goal's reward wants the source ball: the reference ball + 0.195 in the goal's direction."""
    return balls[COLOURS.index(goal.dst)] + TARGET_OFFSET * np.asarray(UNIT[goal.direction])


def on_workbench(point: np.ndarray) -> bool:
    """Whether a ball centre at ``point`` fits on the workbench."""
    return bool(np.all(point >= AREA_LOW) and np.all(point <= AREA_HIGH))


def first_in_the_way(balls: np.ndarray, src: int, aim: np.ndarray) -> int | None:
    """The ball nearest to ``src`` whose centre lies within ``IN_THE_WAY`` of the segment src -> aim, if any."""
    way = aim - balls[src]
    length = float(np.linalg.norm(way))
    if length < 1e-9:
        return None
    along = (balls - balls[src]) @ (way / length)
    across = np.linalg.norm(balls - balls[src] - along[:, None] * (way / length), axis=1)
    blocking = (along > 0) & (along < length) & (across < IN_THE_WAY)
    blocking[src] = False
    return int(np.flatnonzero(blocking)[np.argmin(along[blocking])]) if blocking.any() else None


def legible_action(obs: np.ndarray, goal: RelationGoal) -> int:
    """The legible policy's action (see the module docstring)."""
    balls = np.asarray(obs, dtype=np.float64).reshape(_N_BALLS, 2)
    src, dst = COLOURS.index(goal.src), COLOURS.index(goal.dst)
    aim = reward_target(balls, goal)
    if not on_workbench(aim):
        return dst * 8 + _AWAY_FROM[goal.direction]
    obstacle = first_in_the_way(balls, src, aim)
    if obstacle is not None:
        way = aim - balls[src]
        offset = balls[src] - balls[obstacle]
        side = offset - (offset @ way) / (way @ way) * way  # from the obstacle towards the source ball's side
        norm = float(np.linalg.norm(side))
        side = side / norm if norm > 1e-6 else np.array([-way[1], way[0]]) / np.linalg.norm(way)
        aim = balls[obstacle] + DETOUR * side
    return src * 8 + int(np.argmax(_UNIT_PUSHES @ (aim - balls[src])))


# --- the look-ahead policy -------------------------------------------------------------------------------------
PUSH_LENGTH = 0.247  # measured displacement of a free ball per axis push
PUSHER_CLEARANCE = BALL_RADIUS + 0.05  # ball radius + pusher radius
BLOCKED_PENALTY = 1.0
REFERENCE_BALL_PENALTY = 0.1
SUCCESS_SCORE = -1.0
_PUSHED = np.arange(N_ACTIONS) // 8
_DIRECTION = PUSH_DIRECTIONS[np.arange(N_ACTIONS) % 8]
_STEP = PUSH_LENGTH * _UNIT_PUSHES[np.arange(N_ACTIONS) % 8]
_ROWS = np.arange(N_ACTIONS)
_IS_PUSHED = _PUSHED[:, None] == np.arange(_N_BALLS)[None, :]  # (40, 5)


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of points (A, B, 2) to the segments start-end (A, 2), shape (A, B)."""
    seg = end - start
    t = np.einsum("abk,ak->ab", points - start[:, None], seg) / np.maximum((seg * seg).sum(1), 1e-12)[:, None]
    closest = start[:, None] + np.clip(t, 0.0, 1.0)[..., None] * seg[:, None]
    return np.linalg.norm(points - closest, axis=-1)


def action_scores(obs: np.ndarray, goal: RelationGoal) -> np.ndarray:
    """The look-ahead policy's predicted score of each of the 40 actions for ``goal`` (lower is better)."""
    balls = np.asarray(obs, dtype=np.float64).reshape(_N_BALLS, 2)
    src, dst = COLOURS.index(goal.src), COLOURS.index(goal.dst)
    start = balls[_PUSHED]
    end = np.clip(start + _STEP, AREA_LOW, AREA_HIGH)
    predicted = np.broadcast_to(balls, (N_ACTIONS, _N_BALLS, 2)).copy()
    predicted[_ROWS, _PUSHED] = end
    target = predicted[:, dst] + TARGET_OFFSET * np.asarray(UNIT[goal.direction])
    scores = np.linalg.norm(predicted[:, src] - target, axis=1)
    scores[relation_holds_batch(predicted[:, src], predicted[:, dst], goal.direction)] = SUCCESS_SCORE
    pusher = start - PUSH_OFFSET * _DIRECTION
    others = np.broadcast_to(balls, (N_ACTIONS, _N_BALLS, 2))
    hits_pusher = np.linalg.norm(others - pusher[:, None], axis=-1) < PUSHER_CLEARANCE
    hits_path = _segment_distance(others, start, end) < 2 * BALL_RADIUS
    blocked = ((hits_pusher | hits_path) & ~_IS_PUSHED).any(axis=1)
    scores += BLOCKED_PENALTY * blocked
    scores += np.where(src == _PUSHED, 0.0, np.where(dst == _PUSHED, REFERENCE_BALL_PENALTY, BLOCKED_PENALTY))
    return scores


def lookahead_action(obs: np.ndarray, goal: RelationGoal) -> int:
    """The look-ahead policy's best-scoring action (ties go to the lowest action id)."""
    return int(np.argmin(action_scores(obs, goal)))


POLICIES: dict[str, Callable[[np.ndarray, RelationGoal], int]] = {
    "legible": legible_action,
    "lookahead": lookahead_action,
}


def behaviour_action(
    obs: np.ndarray, goal: RelationGoal, rng: np.random.Generator, epsilon: float, policy: str = "legible"
) -> int:
    """One action of the epsilon-greedy scripted behaviour ``policy`` (a key of ``POLICIES``)."""
    if rng.random() < epsilon:
        return int(rng.integers(N_ACTIONS))
    return POLICIES[policy](obs, goal)
