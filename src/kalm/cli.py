"""The Typer app: one command per built DVC stage. Heavy libraries load only inside the command that runs."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from kalm.config import ConfigError, Params, load_params

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="KALM: ground an LLM in CLEVR-Robot, imagine rollouts for novel goals, learn policies from them.",
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file (every key present).")]


@app.callback()
def main() -> None:
    """Run one stage of the pipeline (`dvc repro` runs them all in order)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _load(path: Path) -> Params:
    try:
        return load_params(path)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None


@app.command("collect")
def collect(params: ParamsOption = Path("params.yaml")) -> None:
    """Roll out the scripted behaviour policy on the 80 training goals -> data/offline/episodes.parquet."""
    loaded = _load(params)
    from kalm.stages import collect as stage

    metrics = stage.run(loaded)
    typer.echo(
        f"collect: {metrics['episodes']} episodes, success rate {metrics['success_rate']:.3f}, "
        f"mean length {metrics['mean_length']:.2f}"
    )
