"""`dvc repro` on a copy of the repository with tiny params: outputs appear, a second repro does nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_params_dict

pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        if name in ("dvc.lock",) or name.startswith("metrics/"):
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    sh("git", "init", "-q", cwd=dest)
    sh("git", "config", "user.name", "kalm tests", cwd=dest)  # `dvc exp run` needs a git identity
    sh("git", "config", "user.email", "tests@kalm.invalid", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "copy", cwd=dest)
    return dest


def test_repro_runs_the_pipeline_then_nothing(repo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo_copy / 'mlflow.db'}")
    first = sh("dvc", "repro", cwd=repo_copy)
    assert "Running stage 'collect'" in first
    metrics = json.loads((repo_copy / "metrics" / "collect.json").read_text())
    assert metrics["episodes"] == tiny_params_dict()["collect"]["episodes"]
    assert (repo_copy / "data" / "offline" / "episodes.parquet").is_file()
    assert (repo_copy / "dvc.lock").is_file()
    second = sh("dvc", "repro", cwd=repo_copy)
    assert "Running stage" not in second and "up to date" in second
    for stage in ("base_model", "collect", "ground", "imagine", "evaluate"):
        assert f"Running stage '{stage}'" in first
    assert all(f"Running stage 'train@{v}-{a}'" in first for v in ("baseline", "kalm") for a in ("bc", "cql"))
    evaluation = json.loads((repo_copy / "metrics" / "eval.json").read_text())
    # A param change re-runs only what depends on it.
    third = sh("dvc", "exp", "run", "-S", "evaluate.episodes=2", cwd=repo_copy)
    assert "Running stage 'evaluate'" in third and "Running stage 'train" not in third
    assert json.loads((repo_copy / "metrics" / "eval.json").read_text()) != evaluation
    assert json.loads((repo_copy / "metrics" / "collect.json").read_text()) == metrics
