"""Every command's --help says what it reads, what it writes and which params matter, in agreement with dvc.yaml and
params.yaml."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from kalm.cli import app
from kalm.config import flatten
from tests.conftest import repo_params
from tests.contracts.test_contracts import DVC

runner = CliRunner()
COMMANDS = ("base_model", "collect", "ground", "imagine", "encode", "train", "evaluate")
# One param each that matters most, named in the help whatever dvc.yaml says.
KEY_PARAMS = {
    "base_model": "llm.backbone",
    "collect": "collect.episodes",
    "ground": "ground.lr",
    "imagine": "imagine.rephrase",
    "encode": "train.encoder",
    "train": "train.steps",
    "evaluate": "evaluate.episodes",
}
SECTIONS = "|".join(repo_params())
# `ground.lr`, `train.bc.lr`, but not the file name `metrics/collect.json`.
DOTTED = re.compile(rf"(?<![\w/.-])(?:{SECTIONS})(?:\.[a-z_]+)+")


def help_text(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})  # one table row per command
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # data/imagined/{rephrase,easy,hard}.parquet names three files
    return re.sub(r"(\S*)\{([^}]+)\}(\S*)", lambda m: " ".join(m[1] + x + m[3] for x in m[2].split(",")), text)


def parts(text: str) -> dict[str, str]:
    """The Reads / Writes / Params paragraphs of a command's help."""
    found = re.search(r"Reads: (.*) Writes: (.*) Params: (.*?) ╭", text)
    assert found, text
    return dict(zip(("reads", "writes", "params"), found.groups(), strict=True))


def generic(path: str) -> str:
    """A dvc.yaml path as the help writes it: ``<variant>-<algo>`` for one matrix entry."""
    path = path.replace("${item.variant}-${item.algo}", "<variant>-<algo>")
    return re.sub(r"\b(baseline|kalm)-(bc|cql)\b", "<variant>-<algo>", path)


def known_keys() -> set[str]:
    keys = set()
    for leaf in flatten(repo_params()):
        pieces = leaf.split(".")
        keys |= {".".join(pieces[:i]) for i in range(1, len(pieces) + 1)}
    return keys


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_names_its_inputs_outputs_and_params(command: str) -> None:
    stage = DVC["stages"][command]
    help_parts = parts(help_text(command))
    for dep in stage["deps"]:
        if not (dep == "cli.py" or dep.startswith("src/")):
            assert generic(dep) in help_parts["reads"], f"{command} --help: reads {dep}?"
    outs = [
        next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots") for o in stage.get(key, [])
    ]
    for out in outs:
        assert generic(out) in help_parts["writes"], f"{command} --help: writes {out}?"
    named = set(DOTTED.findall(help_parts["params"]))
    for param in stage["params"]:
        param = param.replace("${item.algo}", "<algo>")
        if param == "seed":
            assert re.search(r"\bseed\b", help_parts["params"]), command
        elif "<algo>" in param:
            assert param in help_parts["params"], f"{command} --help: params {param}?"
        elif "." in param:
            assert param in named, f"{command} --help: params {param}?"
        else:  # a whole section: at least one of its keys is named
            assert any(n.startswith(f"{param}.") for n in named), f"{command} --help: params {param}.*?"
    assert KEY_PARAMS[command] in named


def test_app_help_lists_what_each_command_writes_and_the_tracking_params() -> None:
    text = help_text()
    for command, main_output in [
        ("base_model", "models/base/"),
        ("collect", "data/offline/episodes.parquet"),
        ("ground", "models/grounded/"),
        ("imagine", "data/imagined/hard.parquet"),
        ("train", "models/policies/<variant>-<algo>/"),
        ("evaluate", "metrics/eval.json"),
    ]:
        assert re.search(rf"{command} [^│]*{re.escape(main_output)}", text), command
    assert {"tracking.enabled", "tracking.experiment"} <= set(DOTTED.findall(text))


def test_every_param_named_in_any_help_exists_in_params_yaml() -> None:
    named = {key for args in [(), *((c,) for c in COMMANDS)] for key in DOTTED.findall(help_text(*args))}
    assert len(named) > 30
    assert named <= known_keys(), sorted(named - known_keys())
