"""`base_model` and `ground` on the tiny backbone: outputs, held-out diagnostics, MLflow, reload."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest

from kalm import paths
from kalm.config import Params
from kalm.data import write_episodes
from kalm.stages import base_model, ground


def test_base_model_builds_the_tiny_backbone(tiny_params: Params, mlflow_store: str) -> None:
    metrics = base_model.run(tiny_params)
    assert (paths.BASE_MODEL / "config.json").is_file() and (paths.BASE_MODEL / "tokenizer.json").is_file()
    assert metrics["layers"] == 2 and metrics["hidden_size"] == 64
    assert 50_000 < metrics["parameters"] < 200_000
    assert json.loads(paths.metrics_file("base_model").read_text()) == metrics
    [run] = mlflow.search_runs(experiment_names=["kalm"], output_format="list")
    assert run.data.tags["base_model.source"] == "tiny random Llama" and run.data.params["llm.backbone"] == "tiny"


@pytest.fixture
def grounded(tiny_params: Params, tiny_base: Path, tiny_episodes: list, mlflow_store: str) -> dict:
    shutil.copytree(tiny_base, paths.BASE_MODEL)
    write_episodes(paths.OFFLINE_EPISODES, tiny_episodes)
    return ground.run(tiny_params)


def test_ground_writes_model_metrics_and_loss_curve(grounded: dict, tiny_params: Params) -> None:
    files = {p.name for p in paths.GROUNDED_MODEL.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "kalm.json", "tokenizer.json"} <= files
    meta = json.loads((paths.GROUNDED_MODEL / "kalm.json").read_text())
    assert meta["base_model"] == str(paths.BASE_MODEL) and meta["finetune"] == "lora" and meta["backbone"] == "tiny"
    metrics = json.loads(paths.metrics_file("ground").read_text())
    assert metrics == json.loads(json.dumps(grounded))
    assert metrics["heldout_episodes"] == round(0.1 * 24) and metrics["train_episodes"] == 10
    assert metrics["steps_done"] == metrics["steps"] > 0
    for key in ("explanation_accuracy", "generation_match_rate"):
        assert 0.0 <= metrics[key] <= 1.0 and 0.0 <= metrics["untrained"][key] <= 1.0
    assert metrics["dynamics_mse"] > 0 and metrics["dynamics_mse_copy_baseline"] > 0
    # The zero-initialised residual state head starts exactly at the copy baseline.
    assert metrics["untrained"]["dynamics_mse"] == pytest.approx(metrics["dynamics_mse_copy_baseline"], rel=1e-4)
    rows = list(csv.DictReader(paths.GROUND_LOSS.open()))
    assert len(rows) == metrics["steps_done"] and all(np.isfinite(float(r["loss"])) for r in rows)
    [run] = mlflow.search_runs(experiment_names=["kalm"], output_format="list")
    assert run.info.run_name == "ground__repro"
    assert run.data.params["ground.finetune"] == "lora" and run.data.params["llm.backbone"] == "tiny"
    assert run.data.metrics["explanation_accuracy"] == metrics["explanation_accuracy"]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert len(history) == len(rows)


def test_ground_refuses_missing_inputs(tiny_params: Params, mlflow_store: str) -> None:
    with pytest.raises(ValueError, match=r"episodes\.parquet: missing \(made by `python cli.py collect`\)"):
        ground.run(tiny_params)
    assert not paths.GROUNDED_MODEL.exists()
