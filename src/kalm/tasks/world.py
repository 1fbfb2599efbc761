"""The world's vocabulary, defined once: balls, directions, actions, the workbench, observations and task levels.

Conventions follow KALM (`reference/clevr-robot.md` §11): object i = COLOURS[i]; BEHIND = +y, FRONT = -y,
LEFT = -x, RIGHT = +x. An observation is float[OBS_DIM] = (x, y) of the five balls in colour order.
"""

from __future__ import annotations

import numpy as np

COLOURS: tuple[str, ...] = ("red", "blue", "green", "purple", "cyan")
OBS_DIM = 2 * len(COLOURS)
DIRECTIONS: tuple[str, ...] = ("behind", "left", "front", "right")  # KALM direction ids 0..3
UNIT: dict[str, tuple[float, float]] = {
    "behind": (0.0, 1.0),
    "left": (-1.0, 0.0),
    "front": (0.0, -1.0),
    "right": (1.0, 0.0),
}
# Push directions of the "perfect" action a = ball * 8 + k (reference/clevr-robot.md §6).
PUSH_DIRECTIONS = np.array(
    [(1, 0), (0, 1), (-1, 0), (0, -1), (0.8, 0.8), (-0.8, 0.8), (0.8, -0.8), (-0.8, -0.8)], dtype=np.float64
)
# The same eight directions in words, for the LM's word action interface (a diagonal is its two words).
PUSH_WORDS: tuple[tuple[str, ...], ...] = (
    ("right",), ("behind",), ("left",), ("front",),
    ("behind", "right"), ("behind", "left"), ("front", "right"), ("front", "left"),
)  # fmt: skip
N_ACTIONS = len(COLOURS) * len(PUSH_DIRECTIONS)  # 40
PUSH_OFFSET = 0.15  # the pusher starts at ball - 0.15 * d (d not normalised) before a push
BALL_RADIUS = 0.13
# The wall planes (x = +-0.6, y = -0.3 / 0.7; reference/clevr-robot.md §1) and the area a ball centre can reach
# inside them (one radius and a margin in).
WALLS_LOW = (-0.6, -0.3)
WALLS_HIGH = (0.6, 0.7)
AREA_LOW = (-0.47, -0.17)
AREA_HIGH = (0.47, 0.57)

# Ball centres can be at most this far outside the walls' usable area, and at least this close to each other, in a
# physically possible state (contacts let balls overlap by millimetres, not centimetres).
PLAUSIBLE_MARGIN = 0.05
PLAUSIBLE_MIN_DIST = 2 * BALL_RADIUS - 0.05


def is_plausible(obs: np.ndarray) -> bool:
    """Whether a (possibly generated) observation could be a real scene: balls on the workbench, not overlapping."""
    balls = np.asarray(obs, dtype=np.float64).reshape(len(COLOURS), 2)
    low, high = np.array(AREA_LOW) - PLAUSIBLE_MARGIN, np.array(AREA_HIGH) + PLAUSIBLE_MARGIN
    if np.any(balls < low) or np.any(balls > high):
        return False
    dists = np.linalg.norm(balls[:, None] - balls[None], axis=-1)[np.triu_indices(len(COLOURS), 1)]
    return bool(dists.min() >= PLAUSIBLE_MIN_DIST)


LEVELS: tuple[str, ...] = ("train", "rephrase", "easy", "hard")
NOVEL_LEVELS: tuple[str, ...] = LEVELS[1:]  # the goals the offline data never has
# A novel level scored on the very instructions imagination was given (the paper's protocol: the novel instructions
# are known in advance), beside the level itself, scored on templates held out of imagination (ours, stricter).
GIVEN_SUFFIX = "_given"
GIVEN_LEVELS: tuple[str, ...] = tuple(level + GIVEN_SUFFIX for level in NOVEL_LEVELS)
