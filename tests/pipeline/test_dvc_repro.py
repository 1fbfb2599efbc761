"""`dvc repro` on a copy of the repository with tiny params, run once per module and shared by its tests: every stage
runs, a second repro does nothing, a forced re-run reproduces every metric (timings aside), MLflow's server shows every
stage's run, `dvc plots show` renders, and an experiment queued for one worker runs only what its param change
touches.

Each stage is a fresh process that spends ~15 s importing torch, transformers, d3rlpy and MLflow on 2 cores, so the
module runs as few stages as the checks need: one repro, one forced repro of every stage, one evaluate queued.
"""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kalm import paths
from tests.conftest import REPO, tiny_params_dict

pytestmark = pytest.mark.slow

TRAIN_STAGES = [f"train@{v}-{a}" for v in ("baseline", "kalm") for a in ("bc", "cql")]
STAGES = ["base_model", "collect", "ground", "imagine", "encode", *TRAIN_STAGES, "evaluate"]
BIN = Path(sys.executable).parent


def sh(*args: str, cwd: Path, env: dict[str, str] | None = None, stdout_only: bool = False) -> str:
    """Run a command of the venv; stdout (+ stderr unless ``stdout_only``); fail the test on a non-zero exit."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout}\n{out.stderr}"
    return out.stdout if stdout_only else out.stdout + out.stderr


@dataclass(frozen=True)
class Pipeline:
    """The repository copy after its first `dvc repro`, what that printed, and an MLflow server on its store."""

    repo: Path
    output: str
    server: subprocess.Popen
    port: int

    def dvc(self, *args: str, stdout_only: bool = False) -> str:
        """dvc in the copy, its stages tracking into the copy's MLflow store."""
        tracking = {"MLFLOW_TRACKING_URI": f"sqlite:///{self.repo / 'mlflow.db'}"}
        return sh("dvc", *args, cwd=self.repo, env=tracking, stdout_only=stdout_only)


def copy_repo(dest: Path) -> Path:
    """The committed files (not dvc.lock and metrics) with tiny params, as a fresh git repository."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        if name in ("dvc.lock",) or name.startswith("metrics/"):
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    params = tiny_params_dict()
    # No evaluation strips: 16 of them, ~40 software-rendered frames each, would add ~50 s to every evaluate run
    # (tests/stages/test_evaluate.py renders them). imagine still draws its strips under DVC.
    params["evaluate"]["render"] = 0
    params["train"]["encoder"] = "grounded"  # the default: the encode stage reads instructions with the grounded LLM
    # Keep the tiny LLM's rollouts so that kalm trains its per-level policies here too: with none kept, its curves
    # folder (plots/train/kalm-*, uncached) is empty, git cannot carry an empty folder into a queued experiment's
    # workspace, and DVC re-runs those train stages there.
    params["imagine"]["filter"] = "none"
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=dest)
    sh("git", "config", "user.name", "kalm tests", cwd=dest)  # `dvc exp run` needs a git identity
    sh("git", "config", "user.email", "tests@kalm.invalid", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "copy", cwd=dest)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path) -> Iterator[Pipeline]:
    """One `dvc repro` of the whole tiny pipeline, committed as a user would before experiments; an MLflow server on
    its store starts in the background (~20 s) while the next tests run."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    shutil.copy(migrated_mlflow_db, repo / "mlflow.db")  # creating the store costs ~10 s in the first stage
    output = sh("dvc", "repro", cwd=repo, env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"})
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "repro", cwd=repo)
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}"],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # its job runner starts 5 more processes
    )  # fmt: skip
    try:
        yield Pipeline(repo, output, server, port)
    finally:
        server.terminate()
        server.wait(timeout=30)


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


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran, in order."""
    return re.findall(r"Running stage '([^']+)'", output)


def test_repro_runs_every_stage_once_and_then_nothing(pipeline: Pipeline) -> None:
    assert sorted(ran(pipeline.output)) == sorted(STAGES)
    assert json.loads((pipeline.repo / "metrics" / "collect.json").read_text())["episodes"] == 12
    again = pipeline.dvc("repro")
    assert not ran(again) and "up to date" in again


def test_forced_rerun_reproduces_every_metric(pipeline: Pipeline) -> None:
    first = all_metrics(pipeline.repo)
    expected = {f"metrics/{s}.json" for s in ("base_model", "collect", "ground", "imagine", "encode", "eval")}
    expected.add("metrics/eval_details.json")
    expected |= {f"metrics/train/{s.removeprefix('train@')}.json" for s in TRAIN_STAGES}
    assert set(first) == expected
    forced = pipeline.dvc("repro", "--force")
    assert sorted(ran(forced)) == sorted(STAGES)
    assert all_metrics(pipeline.repo) == first


def test_dvc_plots_show_renders(pipeline: Pipeline) -> None:
    html = pipeline.dvc("plots", "show", "-o", str(pipeline.repo / "plots_html"))
    assert "index.html" in html and (pipeline.repo / "plots_html" / "index.html").stat().st_size > 1000


def rest(port: int, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_mlflow_server_serves_every_stage(pipeline: Pipeline) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            experiment = rest(pipeline.port, "experiments/get-by-name?experiment_name=kalm")["experiment"]
            break
        except OSError:
            assert time.monotonic() < deadline and pipeline.server.poll() is None, "mlflow server did not come up"
            time.sleep(0.5)
    search = {"experiment_ids": [experiment["experiment_id"]], "max_results": 200}
    by_stage: dict[str, list] = {}
    for run in rest(pipeline.port, "runs/search", search)["runs"]:
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        by_stage.setdefault(tags["stage"], []).append(run)
    assert set(STAGES) <= set(by_stage), sorted(by_stage)
    for stage, stage_runs in by_stage.items():
        run = stage_runs[0]["data"]
        assert run.get("params") and run.get("metrics"), stage
    ground_run = by_stage["ground"][0]["data"]
    logged = {m["key"]: m["value"] for m in ground_run["metrics"]}
    ground = json.loads((pipeline.repo / "metrics" / "ground.json").read_text())
    assert logged["dynamics_mse"] == pytest.approx(ground["dynamics_mse"])
    assert {p["key"]: p["value"] for p in ground_run["params"]}["llm.backbone"] == "tiny"


def experiments(pipeline: Pipeline) -> dict[str, dict]:
    """`dvc exp show --json` as {experiment name: its data (params, metrics)}."""
    shown = json.loads(pipeline.dvc("exp", "show", "--json", stdout_only=True))
    return {
        rev["name"]: rev["data"]
        for baseline in shown
        for exp in baseline.get("experiments") or []
        for rev in exp["revs"]
        if rev.get("name")
    }


def queue_states(pipeline: Pipeline) -> dict[str, str]:
    """{task name: Queued | Running | Success | Failed} from `dvc queue status`."""
    status = pipeline.dvc("queue", "status", stdout_only=True)
    return dict(re.findall(r"^[0-9a-f]{7}\s+(\S+)\s.*\s(\w+)\s*$", status, flags=re.MULTILINE))


def wait_for_queue(pipeline: Pipeline, count: int, timeout: float) -> dict[str, str]:
    """The queue's final task states, once ``count`` experiments were collected or one failed."""
    deadline = time.monotonic() + timeout

    def done() -> bool:  # git is cheap to poll, a dvc call costs ~3 s of CPU that the worker needs
        refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps/", cwd=pipeline.repo, stdout_only=True)
        collected = [r for r in refs.split() if r.count("/") == 4 and not r.startswith("refs/exps/exec/")]
        return len(collected) >= count or any(r.endswith("/failed") for r in refs.split())

    while not done():
        assert time.monotonic() < deadline, f"the queue did not finish: {queue_states(pipeline)}"
        time.sleep(2)
    while True:
        states = queue_states(pipeline)
        if not any(s in ("Queued", "Running") for s in states.values()):
            return states
        assert time.monotonic() < deadline, f"the queue did not finish: {states}"
        time.sleep(2)


def stop_worker(pipeline: Pipeline) -> None:
    """Stop the queue's worker and wait until its process has gone (it would otherwise idle on)."""
    pipeline.dvc("queue", "stop", "--kill")
    pids = []
    for pid_file in (pipeline.repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        try:
            pids.append(int(pid_file.read_text().strip()))
        except (OSError, ValueError):
            continue
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)


def test_queued_experiment_runs_through_one_worker(pipeline: Pipeline) -> None:
    workspace = json.loads((pipeline.repo / "metrics" / "eval.json").read_text())
    pipeline.dvc("exp", "run", "--queue", "-S", "evaluate.episodes=1")
    try:
        pipeline.dvc("queue", "start", "-j", "1")
        states = wait_for_queue(pipeline, 1, timeout=480)
    finally:
        stop_worker(pipeline)
    assert list(states.values()) == ["Success"], states
    shown = experiments(pipeline)
    assert set(shown) == set(states)
    ((name, data),) = shown.items()
    assert ran(pipeline.dvc("queue", "logs", name)) == ["evaluate"], name  # only what the param change touches
    assert data["params"]["params.yaml"]["data"]["evaluate"]["episodes"] == 1
    evaluation = data["metrics"]["metrics/eval.json"]["data"]
    assert {"baseline-bc", "kalm-cql"} <= set(evaluation)  # the summary: one episode per level, so 0 or 1
    assert all(evaluation["baseline-bc"][lv] in (0.0, 1.0) for lv in ("train", "rephrase", "easy", "hard"))
    # the episode counts are in the details, which the experiment's commit carries
    refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=pipeline.repo, stdout_only=True)
    (ref,) = [r for r in refs.split() if r.endswith(f"/{name}")]
    details = sh("git", "show", f"{ref}:{paths.EVAL_DETAILS.as_posix()}", cwd=pipeline.repo, stdout_only=True)
    assert json.loads(details)["episodes"]["train"] == 1
    # queued experiments leave the workspace alone
    assert json.loads((pipeline.repo / "metrics" / "eval.json").read_text()) == workspace
