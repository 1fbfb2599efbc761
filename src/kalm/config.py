"""params.yaml -> frozen typed models, loaded once at the CLI edge.

Every key must be present (``dvc exp run -S`` only sets existing keys); unknown, missing and ill-typed keys
are rejected before any work with a one-line ``ConfigError`` naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kalm.paths import ALGOS

MIXES = ("uniform", "balanced")  # how the kalm variant mixes real and imagined transitions (kalm.rl.dataset)


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
    policy: Literal["legible", "lookahead"] = Field(
        description="Scripted behaviour policy: legible (a learner imitates it) or lookahead (a 40-way argmin)."
    )


class LLMConfig(_Section):
    """The language model grounded by KALM."""

    backbone: str = Field(description="smollm2-135m (packaged), tiny (tests), a local HF folder, or a hub id.")
    allow_network: bool = Field(description="Allow downloading a hub id backbone (no model hub is needed otherwise).")
    num_layers: int = Field(
        ge=0, description="Keep the first k decoder layers (0 = all; a cut LM is no language model: tests only)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(description="auto picks CUDA when present.")


class GroundConfig(_Section):
    """The `ground` stage: grounding SFT on the four KALM patterns."""

    finetune: Literal["lora", "full"] = Field(description="LoRA (numeric modules fully trained) or every weight.")
    lora_rank: int = Field(gt=0)
    lora_alpha: int = Field(gt=0)
    lora_targets: str = Field(min_length=1, description="all-linear or comma-separated module names.")
    residual_state: bool = Field(description="State head predicts the change from the latest state (else absolute).")
    action_interface: Literal["words", "table"] = Field(
        description="words: actions as the LM's colour + direction word vectors; table: Embedding(40) + Linear."
    )
    state_features: Literal["linear", "fourier", "pairs", "relations"] = Field(
        description="State slot input: the coordinates (linear), with their Fourier features, with every pair of "
        "balls' offset and distance (pairs), or with which goal relations hold (relations)."
    )
    action_displacement: bool = Field(
        description="Residual state head adds each action's mean displacement (set from the training data)."
    )
    state_slots: Literal["one", "balls"] = Field(
        description="A state as one position (all coordinates) or one per ball (its colour word + its coordinates)."
    )
    episodes: int = Field(ge=0, description="Offline episodes to train on (0 = all of the training split).")
    patterns: list[Literal["generation", "dynamics", "terminal", "explanation"]] = Field(
        min_length=1,
        description="The SFT objectives trained (any subset of the four; the paper's Table 1 ablates explanation "
        "and dynamics).",
    )
    heads: Literal["mlp", "linear"] = Field(
        description="mlp: after the SFT, with the LM frozen, fit an action head on [hidden state, s_t] and a world "
        "model on (s_t, a_t, previous step) over many offline episodes; linear: the SFT's own heads (the paper's)."
    )
    head_episodes: int = Field(
        gt=0, description="mlp: offline episodes run once through the frozen LM (forward only) for the action head."
    )
    head_steps: int = Field(gt=0, description="mlp: Adam steps (batch 256) fitting the action head.")
    world_steps: int = Field(gt=0, description="mlp: Adam steps (batch 256) fitting the world model (state head).")
    head_units: list[int] = Field(description="mlp: hidden widths of both heads, ReLU ([]: linear on the same inputs).")
    policy_episodes: int = Field(
        gt=0, description="Held-out episodes the LLM plays as a policy in the real env (policy_success)."
    )
    heldout_fraction: float = Field(gt=0.0, lt=1.0, description="Share of episodes held out for diagnostics.")
    epochs: int = Field(gt=0, description="Passes over the training episodes (phrasings re-sampled each pass).")
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0.0, description="Learning rate of the LM weights (LoRA or all).")
    numeric_lr: float = Field(gt=0.0, description="Learning rate of the state / action input maps (from scratch).")
    head_lr: float = Field(gt=0.0, description="Learning rate of the state / action heads (zero-initialised).")
    weight_decay: float = Field(ge=0.0)
    warmup_ratio: float = Field(ge=0.0, lt=1.0)
    max_grad_norm: float = Field(gt=0.0)
    precision: Literal["auto", "bf16", "fp32"] = Field(description="auto: bf16 where the device supports it.")
    diagnostic_episodes: int = Field(gt=0, description="Held-out episodes used for the decoding diagnostics.")
    logging_steps: int = Field(gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> GroundConfig:
        if len(set(self.patterns)) != len(self.patterns):
            raise ValueError(f"patterns: {self.patterns} names a pattern twice")
        if any(u <= 0 for u in self.head_units):
            raise ValueError(f"head_units: {self.head_units} must all be positive")
        if self.state_features in ("pairs", "relations") and self.state_slots == "balls":
            raise ValueError(
                f"state_features: {self.state_features} needs state_slots: one (a ball's own slot has no pairs)"
            )
        return self


class ImagineConfig(_Section):
    """The `imagine` stage: imaginary rollouts of the grounded LLM for the novel levels."""

    rephrase: int = Field(ge=0, description="Rollouts for the rephrase level (paper: 5,600).")
    easy: int = Field(ge=0, description="Rollouts for the unseen easy level, one step each (paper: 72,400).")
    hard: int = Field(ge=0, description="Rollouts for the unseen hard level (paper: 1,680).")
    batch_size: int = Field(gt=0, description="Rollouts decoded together (one KV cache).")
    filter: Literal["none", "realistic", "successful"] = Field(
        description="Rollouts kept: all (none, the paper's), realistic (none off the workbench or beyond the dynamics "
        "limit), or successful (the goal's own test holds on the last generated state)."
    )
    render: int = Field(ge=0, description="Rollouts per level drawn as image strips into reports/imagine/.")


class BCParams(_Section):
    """DiscreteBC hyper-parameters (defaults: the paper's Table 3)."""

    batch_size: int = Field(gt=0, description="Paper: 100.")
    lr: float = Field(gt=0.0, description="Adam learning rate (paper: 1e-3).")
    beta: float = Field(ge=0.0, description="Imitation weight: logit regulariser of d3rlpy's DiscreteBC (paper: 0.5).")


class CQLParams(_Section):
    """DiscreteCQL hyper-parameters (defaults: the paper's Table 3 and the reference code)."""

    batch_size: int = Field(gt=0, description="Paper: 32.")
    lr: float = Field(gt=0.0, description="Adam learning rate (paper: 6.25e-5).")
    alpha: float = Field(ge=0.0, description="Conservative weight (paper: 10).")
    gamma: float = Field(gt=0.0, le=1.0, description="Discount (paper: 0.99).")
    n_critics: int = Field(ge=1, le=10, description="Q functions in the ensemble (reference code: 1).")
    target_update_interval: int = Field(gt=0, description="Steps between target syncs (reference code: 8000).")


class BCQParams(_Section):
    """DiscreteBCQ hyper-parameters (ImagineBench's algorithms; Q-learning like CQL, actions restricted to those an
    imitator finds likely)."""

    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0.0, description="Adam learning rate.")
    gamma: float = Field(gt=0.0, le=1.0, description="Discount.")
    n_critics: int = Field(ge=1, le=10, description="Q functions in the ensemble.")
    action_flexibility: float = Field(
        ge=0.0, le=1.0, description="Actions whose imitator probability / the best one's falls below this are masked."
    )
    beta: float = Field(ge=0.0, description="Imitator logit regulariser.")
    target_update_interval: int = Field(gt=0, description="Steps between target syncs.")


class DTParams(_Section):
    """DiscreteDecisionTransformer hyper-parameters (the paper's DT row): it reads the last ``context_size`` steps
    with their returns-to-go and is asked, at evaluation, for the goal's success reward."""

    batch_size: int = Field(gt=0, description="Trajectory slices per step.")
    hidden_units: list[int] = Field(
        min_length=1, description="Its own state encoder MLP, ReLU; the last width is the transformer's."
    )
    lr: float = Field(gt=0.0, description="AdamW learning rate (warm-up, then cosine decay).")
    context_size: int = Field(gt=0, description="Steps the transformer reads.")
    num_layers: int = Field(gt=0, description="Attention blocks.")
    num_heads: int = Field(gt=0, description="Attention heads (must divide the encoder's last width).")
    dropout: float = Field(ge=0.0, lt=1.0, description="Attention, residual and embedding dropout.")


class TrainConfig(_Section):
    """The `train` stage: d3rlpy offline RL on real (+ imagined) episodes, one policy per variant, algo and seed."""

    seeds: int = Field(gt=0, le=100, description="Policies per variant x algo, each with its own seed.")
    steps: int = Field(gt=0, description="Gradient steps per policy (paper: 500,000).")
    steps_per_epoch: int = Field(gt=0, description="Steps between two points of the learning curves.")
    mix: Literal[MIXES] = Field(
        description="kalm variant: uniform over all transitions, or a fixed imagined share of each batch."
    )
    imagined_share: float = Field(
        gt=0.0, lt=1.0, description="balanced mix: the imagined share of every batch (the paper: 0.5)."
    )
    per_level: bool = Field(
        description="kalm variant: one policy per novel level on offline + that level's rollouts (the paper's)."
    )
    min_imagined: int = Field(
        ge=0, description="per_level: a level with fewer kept rollouts is scored by the baseline's policies."
    )
    encoder: str = Field(
        description="Goal encoder: all-minilm-l6-v2 (packaged), grounded / grounded-mean (the grounded LLM's reading:"
        " last prompt token / mean over the prompt) or a sentence-transformers folder."
    )
    hidden_units: list[int] = Field(min_length=1, description="Encoder MLP widths, ReLU (paper: [256, 256]).")
    threads: int = Field(ge=1, le=256, description="torch threads (2 oversubscribe a shared 2-core CPU).")
    algos: list[Literal[ALGOS]] = Field(
        min_length=1, description="Algorithms the pipeline trains and evaluates, each with and without KALM."
    )
    bc: BCParams
    cql: CQLParams
    bcq: BCQParams
    dt: DTParams

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.steps_per_epoch > self.steps:
            raise ValueError(f"steps_per_epoch: {self.steps_per_epoch} is more than steps ({self.steps})")
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units: {self.hidden_units} must all be positive")
        if len(set(self.algos)) != len(self.algos):
            raise ValueError(f"algos: {self.algos} names an algorithm twice")
        if any(u <= 0 for u in self.dt.hidden_units) or self.dt.hidden_units[-1] % self.dt.num_heads:
            raise ValueError(
                f"dt.hidden_units: {self.dt.hidden_units} must be positive, the last a multiple of dt.num_heads "
                f"({self.dt.num_heads}): the transformer's width"
            )
        return self


class EvaluateConfig(_Section):
    """The `evaluate` stage: success rates per level on seeded episodes, the same starts for every policy."""

    episodes: int = Field(gt=0, description="Episodes per level and policy for train, rephrase, hard (paper: 111).")
    easy_episodes: int = Field(gt=0, description="Episodes of the one-step easy level (paper: 666).")
    render: int = Field(ge=0, description="Episodes per level drawn as image strips for each policy (first seed).")


class TrackingConfig(_Section):
    """MLflow tracking (the store is MLFLOW_TRACKING_URI, default sqlite:///mlflow.db)."""

    enabled: bool = Field(description="Track stage runs in MLflow (false: no MLflow at all).")
    experiment: str = Field(min_length=1, description="MLflow experiment name.")


class Params(_Section):
    """All of params.yaml."""

    seed: int = Field(ge=0, description="The one seed every stage derives its randomness from.")
    env: EnvConfig
    goals: GoalsConfig
    llm: LLMConfig
    collect: CollectConfig
    ground: GroundConfig
    imagine: ImagineConfig
    train: TrainConfig
    evaluate: EvaluateConfig
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
    if error["type"] == "value_error":
        return f"{key}.{error['msg'].removeprefix('Value error, ')}" if key else error["msg"]
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


def with_overrides(params: Params, overrides: dict[str, Any], source: str = "overrides") -> Params:
    """``params`` with dotted keys (``train.cql.lr``) replaced by already-parsed values, validated again."""
    data = params.model_dump()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"{source}: unknown key {key}")
        node[leaf] = value
    return parse_params(data, source)


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
