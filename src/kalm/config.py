"""params.yaml -> frozen typed models, loaded once at the CLI edge.

Every key must be present (``dvc exp run -S`` only sets existing keys); unknown, missing and ill-typed keys
are rejected before any work with a one-line ``ConfigError`` naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EnvConfig(_Section):
    """The CLEVR-Robot environment."""

    max_episode_steps: int = Field(gt=0, le=1000, description="Steps before an episode is truncated (KALM: 50).")


class GoalsConfig(_Section):
    """The novel-goal suites shipped in the package (rephrase, easy, hard)."""

    holdout_fraction: float = Field(
        ge=0.0, lt=1.0, description="Share of each suite's templates (per kind) held out of imagination."
    )


class CollectConfig(_Section):
    """The `collect` stage: the scripted behaviour policy on the 80 training goals."""

    episodes: int = Field(gt=0, description="Episodes to record (paper: 6,400 for RL, 100,000 for SFT).")
    epsilon: float = Field(ge=0.0, le=1.0, description="Probability of a uniformly random action per step.")


class TrackingConfig(_Section):
    """MLflow tracking (the store is MLFLOW_TRACKING_URI, default sqlite:///mlflow.db)."""

    experiment: str = Field(min_length=1, description="MLflow experiment name.")


class Params(_Section):
    """All of params.yaml."""

    seed: int = Field(ge=0, description="The one seed every stage derives its randomness from.")
    env: EnvConfig
    goals: GoalsConfig
    collect: CollectConfig
    tracking: TrackingConfig


class ConfigError(ValueError):
    """A bad params file; the message is one line naming the file and the key."""


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; allowed here: {', '.join(_allowed(Params, loc))}"
    if error["type"] == "missing":
        return f"{key}: missing (every key must be present)"
    return f"{key}: {error['msg']} (got {error['input']!r})"


def parse_params(data: Any, source: str = "params") -> Params:
    """Validate an already-parsed params mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0])}{more}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ``ConfigError`` with a one-line message on any problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read params: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    return parse_params(data, str(path))


def flatten(params: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested params or metrics to dotted keys (``collect.episodes``)."""
    items = params.model_dump() if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
