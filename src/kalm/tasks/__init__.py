"""Goals, success and reward per level, the instruction language and goal suites: pure numpy / str code."""

from kalm.tasks.goals import AllOfGoal, GatherGoal, Goal, LineUpGoal, MoveGoal, RelationGoal, parse_goal, training_goals
from kalm.tasks.language import training_instructions
from kalm.tasks.suites import Suite, load_suite, shipped_suite
from kalm.tasks.world import COLOURS, DIRECTIONS, LEVELS

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "LEVELS",
    "AllOfGoal",
    "GatherGoal",
    "Goal",
    "LineUpGoal",
    "MoveGoal",
    "RelationGoal",
    "Suite",
    "load_suite",
    "parse_goal",
    "shipped_suite",
    "training_goals",
    "training_instructions",
]
