"""The evaluation-only suites in examples/suites/: valid, one per novel level, none of their phrasings shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from kalm.tasks.suites import load_suite, shipped_suite
from kalm.tasks.world import NOVEL_LEVELS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "suites"


@pytest.mark.parametrize("level", NOVEL_LEVELS)
def test_example_suite_is_valid_and_shares_no_phrasing_with_the_shipped_one(level: str) -> None:
    suite = load_suite(EXAMPLES / f"{level}.yaml")
    assert suite.level == level
    texts = {text for text, _ in suite.expand()}
    assert len(texts) >= 80
    assert texts.isdisjoint(text for text, _ in shipped_suite(level).expand())
