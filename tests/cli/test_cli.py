"""The Typer CLI: help, bad params (exit code 2, one line, nothing written) and one stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kalm import paths
from kalm.cli import app

runner = CliRunner()


def test_help_lists_the_built_stages() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(stage in result.output for stage in ("base_model", "collect", "ground"))
    bare = runner.invoke(app, [])
    assert "Usage" in bare.output


def test_bad_params_exit_2_with_one_line_and_write_nothing(tiny_params_file: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(tiny_params_file.read_text())
    data["collect"]["episodes"] = -1
    tiny_params_file.write_text(yaml.safe_dump(data))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["collect", "--params", str(tiny_params_file)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "collect.episodes" in lines[0] and "greater than 0" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unknown_key_exits_2(tiny_params_file: Path) -> None:
    data = yaml.safe_load(tiny_params_file.read_text())
    data["collect"]["episods"] = 5
    tiny_params_file.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["collect", "--params", str(tiny_params_file)])
    assert result.exit_code == 2 and "collect.episods: unknown key" in result.output


def test_collect_command_runs(tiny_params_file: Path, mlflow_store: str) -> None:
    result = runner.invoke(app, ["collect", "--params", str(tiny_params_file)])
    assert result.exit_code == 0, result.output
    assert "collect: 12 episodes" in result.output
    assert paths.OFFLINE_EPISODES.is_file() and paths.metrics_file("collect").is_file()


def test_help_does_not_import_heavy_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from kalm.cli import app; "
        "heavy = [m for m in ('mujoco', 'torch', 'transformers', 'trl', 'd3rlpy', 'mlflow') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("no-such-model", "llm.backbone: 'no-such-model' is not smollm2-135m, tiny, an existing local model folder"),
        ("meta-llama/Llama-2-7b-chat-hf", "a hub id needs llm.allow_network: true"),
    ],
)
def test_bad_backbone_exits_2_before_any_work(tiny_params_file: Path, backbone: str, message: str) -> None:
    data = yaml.safe_load(tiny_params_file.read_text())
    data["llm"]["backbone"] = backbone
    tiny_params_file.write_text(yaml.safe_dump(data))
    for command in ("base_model", "ground", "collect"):
        result = runner.invoke(app, [command, "--params", str(tiny_params_file)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not paths.BASE_MODEL.exists()


def test_missing_upstream_output_exits_1_naming_file_and_stage(tiny_params_file: Path) -> None:
    result = runner.invoke(app, ["ground", "--params", str(tiny_params_file)])
    assert result.exit_code == 1
    assert "data/offline/episodes.parquet: missing (made by `python cli.py collect`)" in result.output


STAGE_COMMANDS = {
    "base_model": [],
    "collect": [],
    "ground": [],
    "imagine": [],
    "train": ["--variant", "kalm", "--algo", "cql"],
    "evaluate": [],
}
BAD_VALUES = [
    (("seed",), -3, "seed: Input should be greater than or equal to 0"),
    (("imagine", "batch_size"), "many", "imagine.batch_size: Input should be a valid integer"),
    (("train", "cql", "alpha"), -1.0, "train.cql.alpha"),
    (("ground", "finetune"), "qlora", "ground.finetune: Input should be 'lora' or 'full'"),
    (("llm", "backbone"), "no/such/model/here", "llm.backbone"),
    (("evaluate", "episodez"), 3, "evaluate.episodez: unknown key"),
]


@pytest.mark.parametrize("command", sorted(STAGE_COMMANDS))
@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES, ids=[".".join(k) for k, _, _ in BAD_VALUES])
def test_every_stage_command_refuses_bad_params(
    tiny_params_file: Path, tmp_path: Path, command: str, key: tuple, value, message: str
) -> None:
    data = yaml.safe_load(tiny_params_file.read_text())
    section = data
    for part in key[:-1]:
        section = section[part]
    section[key[-1]] = value
    tiny_params_file.write_text(yaml.safe_dump(data))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = runner.invoke(app, [command, "--params", str(tiny_params_file), *STAGE_COMMANDS[command]])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
