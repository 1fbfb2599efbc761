"""Profiles: a partial params file becomes validated `dvc exp run -S` options."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from kalm.config import ConfigError, parse_params
from kalm.profiles import main, merge, overrides
from tests.conftest import REPO


def test_merge_overrides_nested_keys_only() -> None:
    assert merge({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}}) == {"a": {"x": 1, "y": 5}, "b": 3}


def test_paper_profile_gives_valid_params_and_dvc_options(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", "params.yaml")
    Path("models/llama-2-7b-chat-hf").mkdir(parents=True)  # the folder the profile names must exist
    args = overrides(REPO / "profiles" / "paper.yaml")
    pairs = dict(a.split("=", 1) for a in args[1::2])
    assert set(args[::2]) == {"-S"}
    assert pairs["ground.finetune"] == "full" and pairs["train.steps"] == "500000"
    assert pairs["imagine.easy"] == "72400" and pairs["ground.residual_state"] == "false"
    applied = merge(yaml.safe_load(Path("params.yaml").read_text()), yaml.safe_load(
        (REPO / "profiles" / "paper.yaml").read_text()))  # fmt: skip
    assert parse_params(applied).collect.episodes == 100_000


def test_a_bad_profile_fails_with_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copy(REPO / "params.yaml", "params.yaml")
    Path("bad.yaml").write_text("train:\n  stepz: 10\n")
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key"):
        overrides("bad.yaml")
    assert main(["bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.stepz" in err


def test_gpu_profile_grounds_on_the_cpu_with_tiny_overrides(
    tmp_path: Path, tiny_base: Path, tiny_episodes: list, mlflow_store: str
) -> None:
    """profiles/gpu.yaml validates, and its settings (full fine-tuning, device auto, 10 epochs, its learning rates)
    run the ground stage on the CPU once the budgets are made tiny."""
    from kalm import paths
    from kalm.data import write_episodes
    from kalm.stages import ground
    from tests.conftest import TINY_OVERRIDES, tiny_params_dict

    shutil.copy(REPO / "params.yaml", "params.yaml")
    pairs = dict(a.split("=", 1) for a in overrides(REPO / "profiles" / "gpu.yaml")[1::2])
    assert (
        pairs["ground.finetune"] == "full"
        and pairs["ground.epochs"] == "10"
        and pairs["llm.backbone"] == "smollm2-135m"
    )
    assert pairs["imagine.easy"] == "72400" and int(pairs["train.steps"]) >= 100_000
    profile = yaml.safe_load((REPO / "profiles" / "gpu.yaml").read_text())
    tiny = {**TINY_OVERRIDES["ground"], "batch_size": 8}
    data = merge(merge(tiny_params_dict(), profile), {"llm": TINY_OVERRIDES["llm"], "ground": tiny})
    params = parse_params(data)
    shutil.copytree(tiny_base, paths.BASE_MODEL)
    write_episodes(paths.OFFLINE_EPISODES, tiny_episodes)
    metrics = ground.run(params)
    assert metrics["steps_done"] == metrics["steps"] > 0
    assert (paths.GROUNDED_MODEL / "model.safetensors").is_file() and (
        paths.GROUNDED_MODEL / "numeric.safetensors"
    ).is_file()
