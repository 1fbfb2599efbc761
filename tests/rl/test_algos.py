"""BC, CQL, BCQ and the decision transformer train (weights change, losses logged) and round-trip through
safetensors + JSON, never a pickle; the transformer's batched actor acts as d3rlpy's one-episode wrapper does."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import d3rlpy
import numpy as np
import pytest
import torch

from kalm.config import Params
from kalm.paths import ALGOS
from kalm.rl.algos import (
    PolicyFileError,
    SequenceActor,
    create_algo,
    is_sequence_model,
    load_policy,
    make_config,
    save_policy,
    state_tensors,
)
from kalm.rl.dataset import build_buffer
from kalm.rl.logger import MLflowAdapterFactory
from tests.conftest import repo_params
from tests.rl.test_dataset import episode

OBS = 10 + 6
MAX_STEPS = 50


def tiny_algo(algo_name: str, tiny_params: Params):
    hp = getattr(tiny_params.train, algo_name).model_dump()
    return create_algo(make_config(algo_name, hp, (32, 32), MAX_STEPS), OBS)


def actions_of(algo, obs: np.ndarray) -> np.ndarray:
    """Greedy actions for a batch of first steps (a transformer: each row its own new episode)."""
    if is_sequence_model(algo):
        return SequenceActor(algo).act(obs, range(len(obs)), [0.0] * len(obs), [100.0] * len(obs))
    return algo.predict(obs)


@pytest.fixture
def buffer():
    rng = np.random.default_rng(1)
    embeddings = {t: rng.normal(size=6).astype(np.float32) for t in ("a", "b")}
    return build_buffer([episode(i, 6, i % 2 == 0, "ab"[i % 2]) for i in range(6)], [], embeddings)


@pytest.mark.parametrize("algo_name", ALGOS)
def test_a_few_steps_change_the_weights_and_log_losses(algo_name: str, buffer, tiny_params: Params) -> None:
    d3rlpy.seed(0)
    algo = tiny_algo(algo_name, tiny_params)
    before = state_tensors(algo)
    factory = MLflowAdapterFactory(log_to_mlflow=False)
    algo.fit(buffer, n_steps=4, n_steps_per_epoch=2, show_progress=False, logger_adapter=factory)
    after = state_tensors(algo)
    trained = [k for k in before if not k.startswith("targ_") and "weight" in k]
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    # the transformer's timestep embedding only moves at the few timesteps the batches held
    assert trained and len(changed) >= len(trained) - (algo_name == "dt")
    rows = factory.adapter.rows
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["loss"]) for r in rows)
    if algo_name == "cql":
        assert {"td_loss", "conservative_loss"} <= set(rows[-1])
    assert not any(k.startswith("time_") for k in rows[-1])


@pytest.mark.parametrize("algo_name", ALGOS)
def test_save_load_round_trip_without_pickle(
    algo_name: str, buffer, tiny_params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d3rlpy.seed(0)
    algo = tiny_algo(algo_name, tiny_params)
    algo.fit(
        buffer,
        n_steps=2,
        n_steps_per_epoch=2,
        show_progress=False,
        logger_adapter=MLflowAdapterFactory(log_to_mlflow=False),
    )
    save_policy(algo, tmp_path, {"encoder": "all-minilm-l6-v2", "algo": algo_name})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "policy.safetensors"]

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded, meta = load_policy(tmp_path)
    assert meta["algo"] == algo_name and meta["encoder"] == "all-minilm-l6-v2"
    obs = np.random.default_rng(2).normal(size=(64, OBS)).astype(np.float32)
    np.testing.assert_array_equal(actions_of(loaded, obs), actions_of(algo, obs))
    for key, value in state_tensors(algo).items():
        assert torch.equal(value, state_tensors(loaded)[key]), key


def test_the_batched_transformer_actor_acts_as_d3rlpys_one_episode_wrapper(tiny_params: Params) -> None:
    d3rlpy.seed(0)
    algo = tiny_algo("dt", tiny_params)
    rng = np.random.default_rng(3)
    steps = algo.config.context_size + 4  # past the context: the oldest steps drop out
    episodes = 3 * rng.normal(size=(3, steps, OBS)).astype(np.float32)  # untrained: every input moves the argmax
    rewards = rng.choice([0.0, 60.0, -40.0], size=(3, steps))  # rewards move the return still to get
    rewards[:, 0] = 0.0
    targets = [100.0, 1.0, 100.0]
    actor = SequenceActor(algo)
    batched = np.stack(
        [actor.act(episodes[:, t], ["x", "y", "z"], rewards[:, t], targets) for t in range(steps)], axis=1
    )
    greedy = d3rlpy.algos.GreedyTransformerActionSampler()
    for row, steps_of_one in enumerate(episodes):
        wrapper = algo.as_stateful_wrapper(target_return=targets[row], action_sampler=greedy)
        alone = [int(wrapper.predict(obs, reward)) for obs, reward in zip(steps_of_one, rewards[row], strict=True)]
        assert batched[row].tolist() == alone
    assert len(set(batched.ravel().tolist())) > 3


def test_bad_policy_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="policy.json: missing"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(PolicyFileError, match="policy.json: not valid JSON"):
        load_policy(tmp_path)


def test_bc_beta_defaults_to_zero_because_d3rlpy_penalises_log_probabilities() -> None:
    # d3rlpy's DiscreteBC adds beta * mean(log_prob ** 2), which pulls the policy towards uniform
    # (reference/learnability.md): the embedded default keeps it off, the paper's 0.5 stays a param.
    params = repo_params()
    assert params["train"]["bc"]["beta"] == 0.0
    assert make_config("bc", params["train"]["bc"], (8,), MAX_STEPS).beta == 0.0
    assert make_config("bc", {**params["train"]["bc"], "beta": 0.5}, (8,), MAX_STEPS).beta == 0.5


def test_importing_the_rl_code_prints_no_gym_notice_and_keeps_warnings() -> None:
    """d3rlpy imports the deprecated gym, which prints a notice on import; kalm.rl drops just that notice."""
    code = "import warnings, kalm.rl.algos; warnings.warn('still shown')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Gym has been unmaintained" not in done.stderr, done.stderr
    assert "still shown" in done.stderr
