"""The training-level instruction language of the KALM sample data: 18 sentence patterns x 3 phrasings."""

from __future__ import annotations

from kalm.tasks.goals import RelationGoal

# Relation phrasings per direction, in the sample data's order (reference/clevr-robot.md §11.2).
RELATION_PHRASES: dict[str, tuple[str, str, str]] = {
    "behind": ("behind", "to the behind of", "in behind of"),
    "left": ("to the left of", "left", "in left of"),
    "front": ("in front of", "front", "to the front of"),
    "right": ("to the right of", "right", "in right of"),
}
# The 18 sentence patterns; {a} = source colour, {r} = relation phrase, {b} = destination colour.
PATTERNS: tuple[str, ...] = (
    "Push the {a} ball {r} the {b} ball",
    "Move the {a} ball {r} the {b} ball",
    "Keep the {a} ball {r} the {b} ball",
    "Can you push the {a} ball {r} the {b} ball",
    "Can you move the {a} ball {r} the {b} ball",
    "Can you keep the {a} ball {r} the {b} ball",
    "Can you help me push the {a} ball {r} the {b} ball",
    "Can you help me move the {a} ball {r} the {b} ball",
    "Can you help me keep the {a} ball {r} the {b} ball",
    "Is the {a} ball {r} the {b} ball",
    "Is there any {a} ball {r} the {b} ball",
    "The {a} ball is pushed {r} the {b} ball",
    "The {a} ball is moved {r} the {b} ball",
    "The {a} ball is being pushed {r} the {b} ball",
    "The {a} ball is being moved {r} the {b} ball",
    "The {a} ball was pushed {r} the {b} ball",
    "The {a} ball was moved {r} the {b} ball",
    "The {a} ball moves {r} the {b} ball",
)


def training_instructions(goal: RelationGoal) -> list[str]:
    """All 54 training-level phrasings of a relation goal (18 patterns x 3 relation phrasings)."""
    return [
        pattern.format(a=goal.src, r=phrase, b=goal.dst)
        for pattern in PATTERNS
        for phrase in RELATION_PHRASES[goal.direction]
    ]
