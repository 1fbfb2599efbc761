"""`ground` under `accelerate launch` with 2 CPU processes (gloo): trains, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kalm import paths
from kalm.data import write_episodes
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_accelerate_launch_two_cpu_processes(tiny_params_file: Path, tiny_base: Path, tiny_episodes: list) -> None:
    shutil.copytree(tiny_base, paths.BASE_MODEL)
    write_episodes(paths.OFFLINE_EPISODES, tiny_episodes)
    launcher = Path(sys.executable).parent / "accelerate"
    # `--multi_gpu` picks accelerate's torchrun launcher; without a GPU the processes run on the CPU over gloo.
    # (`--cpu` would start one process.)
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "cli.py"), "ground"]
    command += ["--params", str(tiny_params_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    metrics = json.loads(paths.metrics_file("ground").read_text())
    # Each process trains on half of the pre-built batches.
    assert 0 < metrics["steps_done"] <= (metrics["steps"] + 1) // 2
    assert (paths.GROUNDED_MODEL / "adapter_model.safetensors").is_file()
    assert out.stdout.count("ground: action accuracy") == 1  # only rank 0 prints the diagnostics
    assert "process 2 of 2 (DistributedType.MULTI_CPU)" in out.stderr
