"""The training-level instruction language of the KALM sample data: 18 sentence patterns x 3 phrasings."""

from __future__ import annotations

import re

from kalm.tasks.goals import RelationGoal
from kalm.tasks.world import COLOURS

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


_PHRASE_TO_DIRECTION = sorted(
    ((phrase, direction) for direction, phrases in RELATION_PHRASES.items() for phrase in phrases),
    key=lambda item: -len(item[0]),
)
_COLOUR = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")


def parse_instruction(text: str) -> RelationGoal | None:
    """Read a training-language instruction back to its goal: the first two colours named (source, then
    destination) and the longest relation phrase between them; None when the text names no such goal."""
    text = text.lower()
    colours = [(m.group(1), m.start(), m.end()) for m in _COLOUR.finditer(text)]
    if len(colours) < 2 or colours[0][0] == colours[1][0]:
        return None
    (src, _, src_end), (dst, dst_start, _) = colours[0], colours[1]
    between = f" {text[src_end:dst_start]} "
    for phrase, direction in _PHRASE_TO_DIRECTION:
        if f" {phrase} " in between:
            return RelationGoal(src, dst, direction)
    return None
