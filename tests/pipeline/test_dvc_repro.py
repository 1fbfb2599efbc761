"""`dvc repro` on a copy of the repository with tiny params: every stage runs, a second repro does nothing, a forced
re-run reproduces every metric (timings aside), MLflow's server shows every stage's run, `dvc plots show` renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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


TIMING = re.compile(r"seconds|per_s(econd)?$|_s$")


def without_timings(value):
    """A metrics JSON without its wall-clock figures."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not TIMING.search(k)}
    return value


def all_metrics(repo: Path) -> dict[str, object]:
    return {
        str(p.relative_to(repo)): without_timings(json.loads(p.read_text()))
        for p in sorted((repo / "metrics").rglob("*.json"))
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(port: int, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_pipeline_reproduces_itself_and_mlflow_serves_every_stage(
    repo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo_copy / 'mlflow.db'}")
    out = sh("dvc", "repro", cwd=repo_copy)
    for stage in ("base_model", "collect", "ground", "imagine", "evaluate"):
        assert f"Running stage '{stage}'" in out
    assert all(f"Running stage 'train@{v}-{a}'" in out for v in ("baseline", "kalm") for a in ("bc", "cql"))
    assert json.loads((repo_copy / "metrics" / "collect.json").read_text())["episodes"] == 12
    again = sh("dvc", "repro", cwd=repo_copy)
    assert "Running stage" not in again and "up to date" in again
    first = all_metrics(repo_copy)
    assert {"metrics/ground.json", "metrics/imagine.json", "metrics/eval.json"} <= set(first)
    sh("dvc", "repro", "--force", cwd=repo_copy)
    assert all_metrics(repo_copy) == first

    html = sh("dvc", "plots", "show", "-o", str(repo_copy / "plots_html"), cwd=repo_copy)
    assert "index.html" in html and (repo_copy / "plots_html" / "index.html").stat().st_size > 1000

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{repo_copy / 'mlflow.db'}"],
        cwd=repo_copy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                experiment = rest(port, "experiments/get-by-name?experiment_name=kalm")["experiment"]
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not come up"
                time.sleep(0.5)
        runs = rest(port, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 200})["runs"]
        by_stage: dict[str, list] = {}
        for run in runs:
            tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            by_stage.setdefault(tags["stage"], []).append(run)
        stages = {"base_model", "collect", "ground", "imagine", "evaluate"}
        stages |= {f"train@{v}-{a}" for v in ("baseline", "kalm") for a in ("bc", "cql")}
        assert stages <= set(by_stage), sorted(by_stage)
        for stage, stage_runs in by_stage.items():
            run = stage_runs[0]["data"]
            assert run.get("params") and run.get("metrics"), stage
        ground_run = by_stage["ground"][0]["data"]
        logged = {m["key"]: m["value"] for m in ground_run["metrics"]}
        ground = json.loads((repo_copy / "metrics" / "ground.json").read_text())
        assert logged["dynamics_mse"] == pytest.approx(ground["dynamics_mse"])
        assert {p["key"]: p["value"] for p in ground_run["params"]}["llm.backbone"] == "tiny"
    finally:
        os.kill(server.pid, 15)
        server.wait(timeout=30)

    # A param change re-runs only what depends on it.
    evaluation = json.loads((repo_copy / "metrics" / "eval.json").read_text())
    third = sh("dvc", "exp", "run", "-S", "evaluate.episodes=2", cwd=repo_copy)
    assert "Running stage 'evaluate'" in third and "Running stage 'train" not in third
    assert json.loads((repo_copy / "metrics" / "eval.json").read_text()) != evaluation
