"""`base_model` and `ground` on the tiny backbone: outputs, held-out diagnostics, MLflow, reload without pickles."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kalm import paths
from kalm.config import Params
from kalm.data import write_episodes
from kalm.llm.generate import predict_next_states
from kalm.llm.model import load_grounded, numeric_of, sample_builder
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
    # Enough steps (~80) and held-out episodes (6) for the tiny model to learn something measurable on them.
    fast = {"lr": 1e-2, "numeric_lr": 1e-2, "head_lr": 1e-2}
    cfg = tiny_params.ground.model_copy(update={"epochs": 8, "heldout_fraction": 0.25, **fast})
    return ground.run(tiny_params.model_copy(update={"ground": cfg}))


def test_ground_writes_model_metrics_and_loss_curve(grounded: dict, tiny_params: Params) -> None:
    files = {p.name for p in paths.GROUNDED_MODEL.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "kalm.json", "tokenizer.json"} <= files
    meta = json.loads((paths.GROUNDED_MODEL / "kalm.json").read_text())
    assert meta["base_model"] == str(paths.BASE_MODEL) and meta["finetune"] == "lora" and meta["backbone"] == "tiny"
    metrics = json.loads(paths.metrics_file("ground").read_text())
    assert metrics == json.loads(json.dumps(grounded))
    assert metrics["heldout_episodes"] == round(0.25 * 24) and metrics["train_episodes"] == 10
    assert metrics["steps"] == -(-metrics["samples"] // 4)  # every sample once, batches of 4
    assert metrics["steps_done"] == metrics["steps"] > 0
    for key in ("explanation_accuracy", "generation_match_rate", "action_accuracy", "named_ball_rate"):
        assert 0.0 <= metrics[key] <= 1.0 and 0.0 <= metrics["untrained"][key] <= 1.0
    # Training lowers the loss on the held-out episodes (not only on the batches it saw).
    assert metrics["heldout_loss"] < 0.97 * metrics["untrained"]["heldout_loss"], metrics
    # The recorded actions push the goal's source ball far more often than chance (0.2).
    assert metrics["data_named_ball_rate"] > 0.5
    assert metrics["dynamics_mse"] > 0 and metrics["dynamics_mse_copy_baseline"] > 0
    # Untrained, the residual head is the action displacement set from the training episodes, not the copy.
    assert metrics["untrained"]["dynamics_mse"] != pytest.approx(metrics["dynamics_mse_copy_baseline"], rel=1e-3)
    # The fitted heads (ground.heads: mlp) are saved with the model; the SFT's own heads' figures stay on record.
    assert (paths.GROUNDED_MODEL / "heads.safetensors").is_file() and meta["heads"] == "mlp"
    assert set(metrics["sft_heads"]) == set(ground.HEAD_METRICS)
    assert metrics["heads"]["state_loss"] < metrics["heads"]["state_loss_before"]
    assert metrics["heads"]["action_episodes"] == 4 and metrics["heads"]["state_transitions"] > 0
    assert 0.0 <= metrics["policy_success"] <= 1.0 and 0.0 <= metrics["untrained"]["policy_success"] <= 1.0
    rows = list(csv.DictReader(paths.GROUND_LOSS.open()))
    assert len(rows) == metrics["steps_done"] and all(np.isfinite(float(r["loss"])) for r in rows)
    [run] = mlflow.search_runs(experiment_names=["kalm"], output_format="list")
    assert run.info.run_name == "ground__repro"
    assert run.data.params["ground.finetune"] == "lora" and run.data.params["llm.backbone"] == "tiny"
    assert run.data.metrics["explanation_accuracy"] == metrics["explanation_accuracy"]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert len(history) == len(rows)


def test_grounded_model_loads_without_unpickling(
    grounded: dict, tiny_episodes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder `ground` writes is safetensors, JSON and tokenizer.json: reloading it never unpickles anything."""
    files = sorted(p.name for p in paths.GROUNDED_MODEL.iterdir())
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))], files
    saved = load_file(paths.GROUNDED_MODEL / "adapter_model.safetensors")
    base = load_file(paths.BASE_MODEL / "model.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *args, **kwargs) -> None:
            refuse()

    for module, name in [(torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    lm, tokenizer, meta = load_grounded(paths.GROUNDED_MODEL, base_dir=paths.BASE_MODEL)
    monkeypatch.undo()

    assert meta["finetune"] == "lora" and meta["backbone"] == "tiny"
    numeric = numeric_of(lm).state_dict()
    assert len(numeric) == 11  # word actions + the action displacement (the defaults): tests/llm/test_model.py
    for key, value in numeric.items():  # the trained numeric modules, as saved
        assert torch.equal(value, saved[f"base_model.model.kalm_numeric.{key}"]), key
    name = "model.layers.0.self_attn.q_proj.weight"  # LoRA merged into the base weights
    assert not torch.allclose(lm.state_dict()[name].float(), base[name].float())
    states = np.stack([e.observations[0] for e in tiny_episodes[:4]])
    builder = sample_builder(tokenizer, lm)
    predicted = predict_next_states(lm, builder, tokenizer.pad_token_id, states, np.arange(4) % 40)
    assert predicted.shape == states.shape and np.isfinite(predicted).all()
    assert not np.allclose(predicted, states)  # the trained head, not the zero-initialised "nothing moves" one


def test_ground_refuses_missing_inputs(tiny_params: Params, mlflow_store: str) -> None:
    with pytest.raises(ValueError, match=r"episodes\.parquet: missing \(made by `python cli.py collect`\)"):
        ground.run(tiny_params)
    assert not paths.GROUNDED_MODEL.exists()


def test_policy_success_scores_a_scripted_policy_high_and_a_constant_one_near_zero(
    tiny_params: Params, tiny_episodes: list
) -> None:
    """The closed-loop score of metrics/ground.json policy_success, on held-out-style episodes (their instruction,
    goal and first scene)."""
    from kalm.tasks import parse_goal
    from kalm.tasks.behaviour import legible_action
    from kalm.tasks.world import COLOURS

    params = tiny_params.model_copy(update={"ground": tiny_params.ground.model_copy(update={"policy_episodes": 20})})

    def scripted(states, episodes):
        return np.array([legible_action(s, parse_goal(e.goal)) for s, e in zip(states, episodes, strict=True)])

    def constant(states, episodes):  # always the same push of a ball the goal does not name
        named = [{parse_goal(e.goal).src, parse_goal(e.goal).dst} for e in episodes]
        return np.array([8 * next(i for i, c in enumerate(COLOURS) if c not in n) for n in named])

    assert ground.policy_success(scripted, tiny_episodes, params) >= 0.8
    assert ground.policy_success(constant, tiny_episodes, params) <= 0.1
