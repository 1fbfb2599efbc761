"""The Typer app: one command per built DVC stage. Heavy libraries load only inside the command that runs."""

from __future__ import annotations

import importlib
import logging
import os
from enum import StrEnum
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


def _run(stage: str, params: Path) -> dict:
    """Load params (exit 2 on bad ones), run the stage; a missing or malformed input exits 1 with one line."""
    loaded = _load(params)
    module = importlib.import_module(f"kalm.stages.{stage}")
    from kalm.data import EpisodeFileError
    from kalm.tracking import TrackingError, check_server, tracking_uri

    try:
        if loaded.tracking.enabled:
            check_server(tracking_uri())  # before any work: a dead server is reported in seconds
        return module.run(loaded)
    except (FileNotFoundError, EpisodeFileError, TrackingError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None


@app.command("base_model")
def base_model(params: ParamsOption = Path("params.yaml")) -> None:
    """Make the backbone a plain HF folder (default: the packaged SmolLM2-135M-Instruct) -> models/base/."""
    metrics = _run("base_model", params)
    typer.echo(f"base_model: {metrics['parameters']:,} parameters, {metrics['layers']} layers")


@app.command("collect")
def collect(params: ParamsOption = Path("params.yaml")) -> None:
    """Roll out the scripted behaviour policy on the 80 training goals -> data/offline/episodes.parquet."""
    metrics = _run("collect", params)
    typer.echo(
        f"collect: {metrics['episodes']} episodes, success rate {metrics['success_rate']:.3f}, "
        f"mean length {metrics['mean_length']:.2f}"
    )


@app.command("ground")
def ground(params: ParamsOption = Path("params.yaml")) -> None:
    """Grounding SFT of the LLM on the offline rollouts (4 KALM patterns) -> models/grounded/."""
    metrics = _run("ground", params)
    if "explanation_accuracy" in metrics:  # only the main process of `accelerate launch` has the diagnostics
        typer.echo(
            f"ground: explanation accuracy {metrics['explanation_accuracy']:.3f}, dynamics MSE "
            f"{metrics['dynamics_mse']:.5f} (copy {metrics['dynamics_mse_copy_baseline']:.5f}), generation match "
            f"{metrics['generation_match_rate']:.3f} (untrained {metrics['untrained']['generation_match_rate']:.3f})"
        )


@app.command("imagine")
def imagine(params: ParamsOption = Path("params.yaml")) -> None:
    """Imaginary rollouts of the grounded LLM for novel goals -> data/imagined/{rephrase,easy,hard}.parquet."""
    metrics = _run("imagine", params)
    rates = ", ".join(f"{level} {m['match_rate']:.3f}" for level, m in metrics["levels"].items())
    typer.echo(f"imagine: match rate {rates}")


class Variant(StrEnum):
    """Training data: offline episodes only, or offline + imagined."""

    baseline = "baseline"
    kalm = "kalm"


class Algo(StrEnum):
    """Offline RL algorithm."""

    bc = "bc"
    cql = "cql"


@app.command("train")
def train(
    variant: Annotated[Variant, typer.Option(help="baseline: offline data; kalm: offline + imagined.")],
    algo: Annotated[Algo, typer.Option(help="DiscreteBC or DiscreteCQL.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Offline RL, every seed of one variant x algo -> models/policies/<variant>-<algo>/seed<k>/."""
    loaded = _load(params)
    from kalm.data import EpisodeFileError
    from kalm.stages import train as stage

    try:
        metrics = stage.run(loaded, variant.value, algo.value)
    except (FileNotFoundError, EpisodeFileError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"train {metrics['policy']}: {metrics['episodes']['real']} real + {metrics['episodes']['imagined']} imagined "
        f"episodes, {len(metrics['seeds'])} seeds x {metrics['steps']} steps, final loss {metrics['mean']['loss']:.4f}"
    )


def _table(table: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(table.values())))
    width = max(len(name) for name in table)
    lines = [f"{'policy':<{width}}  " + "  ".join(f"{c:>10}" for c in columns)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{row[c]:>10.3f}" for c in columns) for name, row in table.items()]
    return "\n".join(lines)


@app.command("evaluate")
def evaluate(
    params: ParamsOption = Path("params.yaml"),
    suite: Annotated[
        list[Path] | None,
        typer.Option("--suite", help="A goal suite YAML of your own (repeatable); needs --out; DVC outputs untouched."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where --suite results go (JSON).")] = None,
) -> None:
    """Success per level of every trained policy -> metrics/eval.json, plots/, reports/ (or --suite ... --out)."""
    loaded = _load(params)
    if not suite:
        if out is not None:
            typer.echo("error: --out needs at least one --suite", err=True)
            raise typer.Exit(code=2)
        metrics = _run("evaluate", params)
        levels = ("train", "rephrase", "easy", "hard", "novel_mean")
        typer.echo(_table({k: {lv: v[lv] for lv in levels} for k, v in metrics.items() if k != "episodes"}))
        return
    if out is None:
        typer.echo("error: --suite needs --out FILE.json", err=True)
        raise typer.Exit(code=2)
    from kalm.tasks import load_suite

    suites = []
    for path in suite:
        try:
            suites.append(load_suite(path))
        except ValueError as err:
            typer.echo(f"error: {' '.join(str(err).split())}", err=True)
            raise typer.Exit(code=2) from None
    from kalm.rl.algos import PolicyFileError
    from kalm.stages import evaluate as stage

    try:
        table = stage.evaluate_suites(loaded, suites, out)
    except (FileNotFoundError, PolicyFileError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(_table(table))
    typer.echo(f"written to {out}")
