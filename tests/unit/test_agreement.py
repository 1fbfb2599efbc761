"""`make check`: a re-run agrees with the committed result when every figure lies inside its committed interval."""

from __future__ import annotations

import json
import subprocess

import pytest

from kalm import paths
from kalm.agreement import compare, main

COMMITTED = {
    "baseline-bc": {
        "train": 0.7,
        "rephrase": 0.36,
        "novel_mean": 0.3,
        "ci95": {"train": [0.65, 0.75], "rephrase": [0.31, 0.41]},
        "seeds": {"seed0": {"train": 0.7, "rephrase": 0.36}},
    },
    "behaviour": {"policy": "legible", "train": 0.9, "ci95": {"train": [0.85, 0.95]}},
    "episodes": {"train": 333, "rephrase": 333},
}


def moved(policy: str, level: str, value: float) -> dict:
    rerun = json.loads(json.dumps(COMMITTED))
    rerun[policy][level] = value
    return rerun


def test_an_identical_rerun_agrees_and_a_moved_figure_is_flagged() -> None:
    assert [(f.policy, f.level, f.inside) for f in compare(COMMITTED, COMMITTED)] == [
        ("baseline-bc", "train", True),
        ("baseline-bc", "rephrase", True),
    ]
    assert [f.inside for f in compare(COMMITTED, moved("baseline-bc", "rephrase", 0.41))] == [True, True]  # on the edge
    assert [f.inside for f in compare(COMMITTED, moved("baseline-bc", "rephrase", 0.42))] == [True, False]
    assert [f.inside for f in compare(COMMITTED, {})] == [False, False]  # a missing figure does not agree


def test_the_command_reads_the_committed_file_from_git(capsys: pytest.CaptureFixture[str]) -> None:
    paths.METRICS.mkdir()
    paths.EVAL_DETAILS.write_text(json.dumps(COMMITTED))
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"]):
        subprocess.run(["git", *args], check=True)
    assert main([]) == 0
    assert "2 of 2 figures inside" in capsys.readouterr().out
    paths.EVAL_DETAILS.write_text(json.dumps(moved("baseline-bc", "train", 0.6)))
    assert main([]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 figures inside" in out and "0.600  NO" in out
    assert "as good as the committed one lands inside 83% of the time" in out  # what one figure outside means
    assert main(["--against", "no-such-rev"]) == 2
