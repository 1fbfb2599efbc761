"""Goal suites: YAML files of instruction templates with colour variables (DESIGN §5).

```yaml
level: rephrase
templates:
  - text: "Slowly nudge the {a} ball to the left side of the {b} ball."
    goal: {type: relation, src: "{a}", dst: "{b}", direction: left}
```
Every ``{name}`` in ``text`` is a colour variable; ``expand()`` enumerates every assignment of distinct colours.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kalm.tasks.goals import parse_goal
from kalm.tasks.world import COLOURS, LEVELS, NOVEL_LEVELS

SHIPPED_LEVELS = NOVEL_LEVELS  # one shipped suite per novel level
_VARIABLE = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class Template:
    """One instruction template: its text, its goal spec with ``{variables}``, and its line in the file."""

    text: str
    goal: dict[str, Any]
    line: int
    variables: tuple[str, ...]

    def instances(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (instruction, goal spec) for distinct colours assigned to the variables."""
        for colours in itertools.permutations(COLOURS, len(self.variables)):
            assignment = dict(zip(self.variables, colours, strict=True))
            yield self.text.format(**assignment), _substitute(self.goal, assignment)

    @property
    def kind(self) -> str:
        """What the template asks for, used to stratify the imagine / evaluate split."""
        kind = self.goal["type"]
        if kind in ("relation", "move"):
            return f"{kind}:{self.goal['direction']}"
        if kind == "all_of":
            return f"all_of:{len(self.goal['goals'])}"
        return kind


@dataclass(frozen=True)
class Suite:
    """A goal suite: a level and its templates. ``source`` names the file in error messages."""

    level: str
    templates: tuple[Template, ...]
    source: str = "<memory>"

    def expand(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(instruction, goal_spec)`` for every template and colour assignment, in file order."""
        for template in self.templates:
            yield from template.instances()

    def split(self, holdout_fraction: float, seed: int) -> tuple[Suite, Suite]:
        """Split the templates into (imagination, held out for evaluation only), stratified by kind.

        Within each kind (e.g. every ``relation:left`` template) a seeded shuffle picks
        ``round(holdout_fraction * n)`` templates to hold out, at least one when the fraction is positive and
        the kind has two or more templates. Both parts keep the file order.
        """
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction: {holdout_fraction} is not in [0, 1)")
        rng = np.random.default_rng(seed)
        held: set[int] = set()
        kinds = sorted({t.kind for t in self.templates})
        for kind in kinds:
            members = [i for i, t in enumerate(self.templates) if t.kind == kind]
            n_held = round(holdout_fraction * len(members))
            if holdout_fraction > 0 and len(members) > 1:
                n_held = min(max(n_held, 1), len(members) - 1)
            held.update(int(i) for i in rng.permutation(members)[:n_held])
        keep = tuple(t for i, t in enumerate(self.templates) if i not in held)
        out = tuple(t for i, t in enumerate(self.templates) if i in held)
        return replace(self, templates=keep), replace(self, templates=out)


def _variables_in(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_VARIABLE.findall(value))
    if isinstance(value, dict):
        return set().union(*(_variables_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_variables_in(v) for v in value)) if value else set()
    return set()


def _substitute(value: Any, assignment: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: assignment[m.group(1)], value)
    if isinstance(value, dict):
        return {k: _substitute(v, assignment) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, assignment) for v in value]
    return value


def _text_variables(text: str, where: str) -> tuple[str, ...]:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as err:
        raise ValueError(f"{where}: text {text!r}: {err}") from None
    names: list[str] = []
    for name in fields:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{where}: text {text!r}: bad variable {{{name}}} (use lowercase names like {{a}})")
        if name not in names:
            names.append(name)
    return tuple(names)


def _parse_template(item: Any, where: str) -> Template:
    if not isinstance(item, dict) or set(item) != {"text", "goal"}:
        keys = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"{where}: a template needs exactly the keys 'text' and 'goal', got {keys}")
    text, goal = item["text"], item["goal"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: text must be a non-empty string")
    if not isinstance(goal, dict):
        raise ValueError(f"{where}: goal must be a mapping, got {type(goal).__name__}")
    variables = _text_variables(text, where)
    if len(variables) > len(COLOURS):
        raise ValueError(f"{where}: {len(variables)} variables, but there are only {len(COLOURS)} colours")
    unknown = _variables_in(goal) - set(variables)
    if unknown:
        raise ValueError(f"{where}: goal uses variable(s) {sorted(unknown)} that the text does not name")
    unused = set(variables) - _variables_in(goal)
    if unused:
        raise ValueError(f"{where}: text variable(s) {sorted(unused)} do not appear in the goal")
    template = Template(text=text, goal=goal, line=0, variables=variables)
    _, example = next(template.instances())
    try:
        parse_goal(example)
    except ValueError as err:
        raise ValueError(f"{where}: goal.{err}") from None
    return template


def parse_suite(text: str, source: str = "<memory>") -> Suite:
    """Parse suite YAML text; errors name ``source``, the template's line and the bad value."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with 'level' and 'templates'")
    extra = set(data) - {"level", "templates"}
    if extra:
        raise ValueError(f"{source}: unknown key(s) {sorted(extra)}; allowed: level, templates")
    level = data.get("level")
    if level not in LEVELS:
        raise ValueError(f"{source}: level: {level!r} is not one of {', '.join(LEVELS)}")
    items = data.get("templates")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{source}: templates: expected a non-empty list")
    nodes = next(v for k, v in root.value if k.value == "templates").value
    templates = []
    for item, node in zip(items, nodes, strict=True):
        line = node.start_mark.line + 1
        template = _parse_template(item, f"{source}:{line}")
        templates.append(replace(template, line=line))
    return Suite(level=level, templates=tuple(templates), source=source)


def load_suite(path: str | Path) -> Suite:
    """Load and validate a goal suite YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read goal suite: {err.strerror}") from None
    return parse_suite(text, source=str(path))


def shipped_suite(level: str) -> Suite:
    """One of the goal suites shipped in the package: ``rephrase``, ``easy`` or ``hard``."""
    if level not in SHIPPED_LEVELS:
        raise ValueError(f"level: {level!r} has no shipped suite; one of {', '.join(SHIPPED_LEVELS)}")
    resource = resources.files("kalm.tasks") / "suites" / f"{level}.yaml"
    return parse_suite(resource.read_text(encoding="utf-8"), source=f"kalm/tasks/suites/{level}.yaml")
