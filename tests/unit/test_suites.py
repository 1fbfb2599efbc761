"""Goal suites: the shipped novel-goal suites, expansion, the imagine / evaluate split and load errors."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from kalm.tasks import load_suite, parse_goal, shipped_suite

SUITE = """level: rephrase
templates:
  - text: "Nudge the {a} ball to the left side of the {b} ball."
    goal: {type: relation, src: "{a}", dst: "{b}", direction: left}
  - text: "I'd like the {a} orb to sit behind the {b} orb."
    goal: {type: relation, src: "{a}", dst: "{b}", direction: behind}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_expand_enumerates_distinct_colour_assignments(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, SUITE))
    assert suite.level == "rephrase"
    items = list(suite.expand())
    assert len(items) == 2 * 20
    text, goal = items[0]
    assert text == "Nudge the red ball to the left side of the blue ball."
    assert goal == {"type": "relation", "src": "red", "dst": "blue", "direction": "left"}
    assert all(parse_goal(g).src in t and parse_goal(g).dst in t for t, g in items)
    assert all(parse_goal(g).src != parse_goal(g).dst for _, g in items)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (("direction: left", "direction: up"), r"suite\.yaml:3: goal\.direction: 'up'"),
        (
            ('src: "{a}", dst: "{b}", direction: left', 'src: pink, dst: "{b}", direction: left'),
            r":3: .*\['a'\]",
        ),
        (
            ('src: "{a}", dst: "{b}", direction: left', 'src: "{a}", dst: "{c}", direction: left'),
            r":3: .*'c'",
        ),
        (
            ('type: relation, src: "{a}", dst: "{b}", direction: left', 'type: warp, src: "{a}", dst: "{b}"'),
            r":3: goal\.type: 'warp'",
        ),
        (("level: rephrase", "level: expert"), r"suite\.yaml: level: 'expert'"),
        (("{a} orb to sit", "{A} orb to sit"), r":5: .*bad variable \{A\}"),
        (('src: "{a}", dst: "{b}", direction: behind', 'src: grey, dst: "{b}", direction: behind'), r":5: "),
    ],
)
def test_bad_suites_name_file_line_and_value(tmp_path: Path, replace: tuple[str, str], message: str) -> None:
    path = write(tmp_path, SUITE.replace(*replace, 1))
    with pytest.raises(ValueError, match=message) as err:
        load_suite(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_colour_in_goal_names_the_value(tmp_path: Path) -> None:
    bad = SUITE.replace('src: "{a}", dst: "{b}", direction: behind', 'src: "{a}", dst: olive, direction: behind')
    path = write(tmp_path, bad.replace("behind the {b} orb", "behind the olive orb"))
    with pytest.raises(ValueError, match=r"suite\.yaml:5: goal\.dst: 'olive' is not one of"):
        load_suite(path)


def test_missing_file_and_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope.yaml: cannot read"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="templates: expected a non-empty list"):
        load_suite(write(tmp_path, "level: easy\ntemplates: []\n"))
    with pytest.raises(ValueError, match=r":3: a template needs exactly the keys"):
        load_suite(write(tmp_path, "level: easy\ntemplates:\n  - text: hi\n"))


def kinds(level: str) -> Counter:
    return Counter(t.kind for t in shipped_suite(level).templates)


def test_shipped_rephrase_suite_covers_all_directions() -> None:
    suite = shipped_suite("rephrase")
    assert suite.level == "rephrase" and len(suite.templates) >= 40
    assert {k: n >= 10 for k, n in kinds("rephrase").items()} == {
        f"relation:{d}": True for d in ("behind", "left", "front", "right")
    }
    assert len({t.text for t in suite.templates}) == len(suite.templates)


def test_shipped_easy_suite_has_20_per_direction() -> None:
    assert shipped_suite("easy").level == "easy"
    assert {k: n >= 20 for k, n in kinds("easy").items()} == {
        f"move:{d}": True for d in ("behind", "left", "front", "right")
    }


def test_shipped_hard_suite_has_the_four_kinds() -> None:
    suite = shipped_suite("hard")
    assert suite.level == "hard"
    assert {k: n >= 10 for k, n in kinds("hard").items()} == {
        "all_of:2": True,
        "all_of:3": True,
        "line_up": True,
        "gather": True,
    }
    for _, spec in suite.expand():
        parse_goal(spec)


def test_shipped_rephrasings_are_not_the_training_language() -> None:
    training = re.compile(r"^(Can you (help me )?)?(push|move|keep) the \w+ ball", re.IGNORECASE)
    assert not [t.text for t in shipped_suite("rephrase").templates if training.match(t.text)]


@pytest.mark.parametrize("level", ["rephrase", "easy", "hard"])
def test_split_is_disjoint_stratified_and_seeded(level: str) -> None:
    suite = shipped_suite(level)
    imagine, held = suite.split(0.25, seed=0)
    texts_i, texts_h = {t.text for t in imagine.templates}, {t.text for t in held.templates}
    assert not texts_i & texts_h
    assert texts_i | texts_h == {t.text for t in suite.templates}
    for kind, n in Counter(t.kind for t in suite.templates).items():
        n_held = sum(t.kind == kind for t in held.templates)
        assert n_held == max(1, round(0.25 * n)), kind
    assert suite.split(0.25, seed=0) == (imagine, held)
    assert suite.split(0.25, seed=1) != (imagine, held)
    assert suite.split(0.0, seed=0)[1].templates == ()
