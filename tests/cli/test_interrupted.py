"""An interrupted stage leaves no partial output, and the next run redoes it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kalm import paths
from kalm.data import read_episodes
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_killed_collect_leaves_nothing_and_the_rerun_completes(tiny_params_file: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(tiny_params_file.read_text())
    data["collect"]["episodes"] = 50_000  # minutes of work (legible: ~4 ms an episode): killed long before the end
    tiny_params_file.write_text(yaml.safe_dump(data))
    command = [sys.executable, str(REPO / "cli.py"), "collect", "--params", str(tiny_params_file)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(12.0)  # imports take a few seconds; then it is collecting
    assert process.poll() is None, "collect finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not paths.OFFLINE_EPISODES.exists() and not paths.metrics_file("collect").exists()

    data["collect"]["episodes"] = 12
    tiny_params_file.write_text(yaml.safe_dump(data))
    subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    assert len(read_episodes(paths.OFFLINE_EPISODES)) == 12
