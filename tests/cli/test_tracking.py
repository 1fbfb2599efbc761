"""MLflow unreachable: a one-line error within seconds, nothing written; `tracking.enabled: false` runs untracked."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kalm import paths
from kalm.cli import app

runner = CliRunner()


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize("command", [["collect"], ["train", "--variant", "baseline", "--algo", "bc"]])
def test_dead_tracking_server_fails_fast_with_one_line(
    command: list[str], tiny_params_file: Path, tmp_path: Path, monkeypatch
) -> None:
    uri = f"http://127.0.0.1:{dead_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    start = time.monotonic()
    result = runner.invoke(app, [*command, "--params", str(tiny_params_file)])
    assert time.monotonic() - start < 10
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "tracking.enabled: false" in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_tracking_disabled_runs_without_mlflow(tiny_params_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{dead_port()}")  # never contacted
    data = yaml.safe_load(tiny_params_file.read_text())
    data["tracking"]["enabled"] = False
    tiny_params_file.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["collect", "--params", str(tiny_params_file)])
    assert result.exit_code == 0, result.output
    assert paths.OFFLINE_EPISODES.is_file() and paths.metrics_file("collect").is_file()
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "mlruns").exists()


def test_ui_address_is_the_experiments_runs_table(mlflow_store: str) -> None:
    import mlflow

    from kalm.ui import runs_url

    assert runs_url("kalm", mlflow_store).endswith("/#/experiments (no 'kalm' experiment yet: run `make repro`)")
    experiment_id = mlflow.MlflowClient(tracking_uri=mlflow_store).create_experiment("kalm")
    expected = f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert runs_url("kalm", mlflow_store) == expected
