"""The scripted, goal-directed behaviour policy that records the offline data (DESIGN §4).

The paper does not state its behaviour policy. Ours looks one push ahead: for each of the 40 actions it
predicts where the pushed ball ends (a free push moves a ball 0.247 along its direction, clipped to the
workbench) and scores the result: a predicted success is best; otherwise the distance of the source ball to
the goal's reward target, plus penalties when the pusher's side is occupied or the path runs into another
ball. Pushes of the source ball are preferred; the reference ball is pushed only when that is clearly better
(e.g. to free it from a wall), other balls practically never. With probability ``epsilon`` the action is
uniformly random.
"""

from __future__ import annotations

import numpy as np

from kalm.tasks.goals import (
    AREA_HIGH,
    AREA_LOW,
    BALL_RADIUS,
    COLOURS,
    N_ACTIONS,
    PUSH_DIRECTIONS,
    TARGET_OFFSET,
    UNIT,
    RelationGoal,
    relation_holds_batch,
)

PUSH_LENGTH = 0.247  # measured displacement of a free ball per axis push
PUSHER_OFFSET = 0.15
PUSHER_CLEARANCE = BALL_RADIUS + 0.05  # ball radius + pusher radius
BLOCKED_PENALTY = 1.0
REFERENCE_BALL_PENALTY = 0.1
SUCCESS_SCORE = -1.0
_N_BALLS = len(COLOURS)
_PUSHED = np.arange(N_ACTIONS) // 8
_DIRECTION = PUSH_DIRECTIONS[np.arange(N_ACTIONS) % 8]
_STEP = PUSH_LENGTH * _DIRECTION / np.linalg.norm(_DIRECTION, axis=1, keepdims=True)
_ROWS = np.arange(N_ACTIONS)
_IS_PUSHED = _PUSHED[:, None] == np.arange(_N_BALLS)[None, :]  # (40, 5)


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of points (A, B, 2) to the segments start-end (A, 2), shape (A, B)."""
    seg = end - start
    t = np.einsum("abk,ak->ab", points - start[:, None], seg) / np.maximum((seg * seg).sum(1), 1e-12)[:, None]
    closest = start[:, None] + np.clip(t, 0.0, 1.0)[..., None] * seg[:, None]
    return np.linalg.norm(points - closest, axis=-1)


def action_scores(obs: np.ndarray, goal: RelationGoal) -> np.ndarray:
    """The predicted score of each of the 40 actions for ``goal`` (lower is better)."""
    balls = np.asarray(obs, dtype=np.float64).reshape(_N_BALLS, 2)
    src, dst = COLOURS.index(goal.src), COLOURS.index(goal.dst)
    start = balls[_PUSHED]
    end = np.clip(start + _STEP, AREA_LOW, AREA_HIGH)
    predicted = np.broadcast_to(balls, (N_ACTIONS, _N_BALLS, 2)).copy()
    predicted[_ROWS, _PUSHED] = end
    target = predicted[:, dst] + TARGET_OFFSET * np.asarray(UNIT[goal.direction])
    scores = np.linalg.norm(predicted[:, src] - target, axis=1)
    scores[relation_holds_batch(predicted[:, src], predicted[:, dst], goal.direction)] = SUCCESS_SCORE
    pusher = start - PUSHER_OFFSET * _DIRECTION
    others = np.broadcast_to(balls, (N_ACTIONS, _N_BALLS, 2))
    hits_pusher = np.linalg.norm(others - pusher[:, None], axis=-1) < PUSHER_CLEARANCE
    hits_path = _segment_distance(others, start, end) < 2 * BALL_RADIUS
    blocked = ((hits_pusher | hits_path) & ~_IS_PUSHED).any(axis=1)
    scores += BLOCKED_PENALTY * blocked
    scores += np.where(src == _PUSHED, 0.0, np.where(dst == _PUSHED, REFERENCE_BALL_PENALTY, BLOCKED_PENALTY))
    return scores


def greedy_action(obs: np.ndarray, goal: RelationGoal) -> int:
    """The best-scoring action for ``goal`` (ties go to the lowest action id)."""
    return int(np.argmin(action_scores(obs, goal)))


def behaviour_action(obs: np.ndarray, goal: RelationGoal, rng: np.random.Generator, epsilon: float) -> int:
    """One action of the epsilon-greedy scripted behaviour policy."""
    if rng.random() < epsilon:
        return int(rng.integers(N_ACTIONS))
    return greedy_action(obs, goal)
