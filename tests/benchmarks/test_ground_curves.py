"""benchmarks/ground_curves.py on tiny settings: two configurations, checkpoints at fixed steps, one table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from kalm.data import write_episodes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ground_curves.py"


def test_curves_compare_configurations_at_equal_steps(
    tiny_params_file: Path, tiny_base: Path, tiny_episodes: list, tmp_path: Path, monkeypatch, capsys
) -> None:
    episodes = tmp_path / "episodes.parquet"
    write_episodes(episodes, tiny_episodes)
    spec = importlib.util.spec_from_file_location("ground_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["ground_curves.py", "--params", str(tiny_params_file), "--base", str(tiny_base)]
    argv += ["--episodes", str(episodes), "--steps", "4", "--every", "2"]
    argv += ["--config", "words:ground.action_displacement=false"]
    argv += ["--config", "table:ground.action_interface=table,ground.state_features=fourier,ground.state_slots=balls"]
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    table = capsys.readouterr().out.split("4 steps, held-out diagnostics")[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| words") or "| table" in line]
    assert [(r[0].strip(), int(r[1])) for r in rows] == [(n, s) for n in ("words", "table") for s in (0, 2, 4)]
    for row in rows:
        action_accuracy, named_ball, dynamics_vs_copy = float(row[2]), float(row[3]), float(row[6])
        assert 0.0 <= action_accuracy <= 1.0 and 0.0 <= named_ball <= 1.0 and dynamics_vs_copy > 0
    # Step 0 is the untrained model: without the action displacement its zero-initialised residual state head
    # copies the state exactly; with it (the default), it does not.
    assert float(rows[0][6]) == pytest.approx(1.0) and float(rows[3][6]) != pytest.approx(1.0)


def test_unknown_override_is_refused(tiny_params_file: Path, tiny_base: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("ground_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from kalm.config import load_params

    with pytest.raises(SystemExit, match="unknown key ground.nope"):
        module.with_overrides(load_params(tiny_params_file), {"ground.nope": "1"})
