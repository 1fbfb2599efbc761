"""benchmarks/explanation_ceiling.py on tiny episodes: the goal's parts are learnable, and the table has every row."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from kalm.data import write_episodes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "explanation_ceiling.py"


def load_script():
    spec = importlib.util.spec_from_file_location("explanation_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_mlp_fits_the_goals_it_is_trained_on(tiny_episodes: list) -> None:
    """On its own training episodes the MLP names every goal part: a probe that cannot fit says nothing."""
    module = load_script()
    x, y = module.dataset(tiny_episodes, "relations")
    assert x.shape[0] == len(y) > 0 and x.shape[1] == 3 * (10 + 80)
    net = module.fit(x, y, steps=300, seed=0)
    assert module.accuracies(net, x, y)["goal"] == 1.0
    untrained = module.accuracies(module.fit(x, y, steps=0, seed=0), x, y)
    assert untrained["goal"] < 0.5


def test_the_rule_ceiling_counts_the_relations_that_turn_true(tiny_episodes: list) -> None:
    """Ground truth: the goal always turns true at a successful episode's last step, so the pick is never zero."""
    expected, unique, n = load_script().rule_ceiling(tiny_episodes)
    assert n == sum(e.success and "direction" in e.goal for e in tiny_episodes) > 0
    assert 0.0 < unique <= expected <= 1.0


def test_table_rows_per_size_and_features(
    tiny_params_file: Path, tiny_episodes: list, tmp_path: Path, monkeypatch, capsys
) -> None:
    episodes = tmp_path / "episodes.parquet"
    write_episodes(episodes, tiny_episodes)
    module = load_script()
    argv = ["explanation_ceiling.py", "--params", str(tiny_params_file), "--offline", str(episodes)]
    monkeypatch.setattr(sys, "argv", [*argv, "--episodes", "0", "--steps", "20"])
    module.main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][2:]
    assert [r[0].strip() for r in rows] == ["linear", "pairs", "relations"]
    for row in rows:
        assert all(0.0 <= float(cell) <= 1.0 for cell in row[3:])
