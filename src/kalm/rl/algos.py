"""d3rlpy algorithms (DiscreteBC, DiscreteCQL, DiscreteBCQ, DiscreteDecisionTransformer) and policy files loaded
without unpickling anything.

A policy folder holds ``policy.safetensors`` (the state dicts of the algorithm's networks) and ``policy.json``
(the d3rlpy config with shapes, as d3rlpy's own JSON, plus our metadata: goal encoder, variant, seed ...).
d3rlpy's ``save`` / ``load_learnable`` go through ``torch.save`` / ``torch.load``, so they are not used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import d3rlpy
import numpy as np
import torch

from kalm.data.errors import InputFileError
from kalm.paths import ALGOS
from kalm.tasks.goals import SUCCESS_REWARD
from kalm.tasks.world import N_ACTIONS

WEIGHTS_FILE = "policy.safetensors"
CONFIG_FILE = "policy.json"
FORMAT_VERSION = 1


def make_config(
    algo: str, hp: Mapping[str, Any], hidden: tuple[int, ...], max_steps: int
) -> d3rlpy.base.LearnableConfig:
    """The d3rlpy config of ``algo`` with hyper-parameters ``hp`` and an MLP encoder of ``hidden`` units (ReLU);
    ``max_steps`` bounds an episode (the decision transformer's timestep embedding)."""
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(hidden), activation="relu")
    if algo == "bc":
        return d3rlpy.algos.DiscreteBCConfig(
            batch_size=hp["batch_size"], learning_rate=hp["lr"], beta=hp["beta"], encoder_factory=encoder
        )
    if algo in ("cql", "bcq"):  # Q-learning: the same optimiser, discount, ensemble and target sync
        q_learning = {
            "batch_size": hp["batch_size"],
            "learning_rate": hp["lr"],
            "gamma": hp["gamma"],
            "n_critics": hp["n_critics"],
            "target_update_interval": hp["target_update_interval"],
            "encoder_factory": encoder,
        }
        if algo == "cql":
            return d3rlpy.algos.DiscreteCQLConfig(alpha=hp["alpha"], **q_learning)
        return d3rlpy.algos.DiscreteBCQConfig(
            action_flexibility=hp["action_flexibility"], beta=hp["beta"], **q_learning
        )
    if algo == "dt":  # its own encoder: the transformer's cost grows with the square of its width
        encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(hp["hidden_units"]), activation="relu")
        return d3rlpy.algos.DiscreteDecisionTransformerConfig(
            batch_size=hp["batch_size"],
            learning_rate=hp["lr"],
            context_size=hp["context_size"],
            max_timestep=max_steps + 1,  # timesteps count from 1
            num_layers=hp["num_layers"],
            num_heads=hp["num_heads"],
            attn_dropout=hp["dropout"],
            resid_dropout=hp["dropout"],
            embed_dropout=hp["dropout"],
            encoder_factory=encoder,
            reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(1.0 / SUCCESS_REWARD),  # returns ~1, not ~100
        )
    raise ValueError(f"algo: {algo!r} is not one of {', '.join(ALGOS)}")


def create_algo(config: d3rlpy.base.LearnableConfig, obs_dim: int) -> Any:
    """Build the algorithm with its networks for ``obs_dim`` inputs and the 40 discrete actions (on the CPU)."""
    algo = config.create(device="cpu:0")
    algo.create_impl((obs_dim,), N_ACTIONS)
    return algo


def networks(algo: Any) -> dict[str, torch.nn.Module]:
    """The algorithm's torch modules (Q functions and targets, or the imitator), without optimisers."""
    return dict(algo.impl.modules.get_torch_modules())


def state_tensors(algo: Any) -> dict[str, torch.Tensor]:
    """Every network parameter and buffer under ``<module>.<name>``."""
    return {
        f"{module_name}.{key}": value.detach().cpu().contiguous().clone()
        for module_name, module in networks(algo).items()
        for key, value in module.state_dict().items()
    }


def save_policy(algo: Any, folder: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write ``policy.safetensors`` and ``policy.json`` into ``folder`` (which must exist)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with_shape = d3rlpy.base.LearnableConfigWithShape(
        observation_shape=algo.impl.observation_shape, action_size=algo.impl.action_size, config=algo.config
    )
    save_file(state_tensors(algo), str(folder / WEIGHTS_FILE))
    payload = {"format": FORMAT_VERSION, "d3rlpy": json.loads(with_shape.serialize()), **metadata}
    (folder / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


class PolicyFileError(InputFileError):
    """A policy folder that is missing or malformed; the message names the file."""


def read_policy_json(folder: str | Path) -> dict[str, Any]:
    """The ``policy.json`` of a policy folder."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise PolicyFileError(f"{path}: missing (made by `python cli.py train`)") from None
    except json.JSONDecodeError as err:
        raise PolicyFileError(f"{path}: not valid JSON: {err}") from None
    if data.get("format") != FORMAT_VERSION or "d3rlpy" not in data:
        raise PolicyFileError(f"{path}: not a kalm policy file (format {FORMAT_VERSION})")
    return data


def load_policy(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a saved algorithm from its JSON config and load its safetensors weights; returns (algo, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_policy_json(folder)
    with_shape = d3rlpy.base.LearnableConfigWithShape.deserialize(json.dumps(meta["d3rlpy"]))
    algo = with_shape.create(device="cpu:0")
    weights_path = folder / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (OSError, SafetensorError) as err:
        raise PolicyFileError(f"{weights_path}: cannot read weights: {err}") from None
    for module_name, module in networks(algo).items():
        prefix = f"{module_name}."
        state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise PolicyFileError(f"{weights_path}: weights do not fit {module_name}: {err}") from None
    return algo, meta


def is_sequence_model(algo: Any) -> bool:
    """Whether the policy reads its episode so far (the decision transformer), not only the current observation."""
    return isinstance(algo, d3rlpy.algos.TransformerAlgoBase)


def greedy_actions(algo: Any, observations: np.ndarray) -> np.ndarray:
    """The policy's greedy action ids for a batch of observations (a policy of one step: not a sequence model)."""
    return np.asarray(algo.predict(np.asarray(observations, dtype=np.float32)), dtype=np.int64)


class SequenceActor:
    """Greedy actions of a decision transformer for many episodes stepped together: for each, what d3rlpy's
    ``StatefulTransformerWrapper`` does for one episode (the last ``context_size`` observations, the actions before
    them with a pad for the current one, the return still to get — the target less the rewards received — and
    timesteps from 1), in one forward pass per step."""

    def __init__(self, algo: Any):
        self._algo = algo
        self._history: dict[Any, tuple[list[np.ndarray], list[int], list[float]]] = {}

    def act(self, observations: np.ndarray, keys: Any, rewards: Any, targets: Any) -> np.ndarray:
        """Actions for ``observations`` (n, D), row i the next step of the episode named ``keys[i]``, which received
        ``rewards[i]`` on arriving there; a new key starts an episode that asks for the return ``targets[i]``."""
        from d3rlpy.algos.transformer.inputs import TorchTransformerInput, TransformerInput

        config = self._algo.config
        rows = []
        for obs, key, reward, target in zip(
            np.asarray(observations, dtype=np.float32), keys, rewards, targets, strict=True
        ):
            seen, actions, to_go = self._history.setdefault(key, ([], [], []))
            seen.append(obs)
            to_go.append((to_go[-1] if to_go else float(target)) - float(reward))
            t = len(seen)
            rows.append(
                TorchTransformerInput.from_numpy(
                    TransformerInput(
                        observations=np.stack(seen),
                        actions=np.array([*actions, 0], dtype=np.int64),
                        rewards=np.zeros((t, 1), dtype=np.float32),  # not read by the transformer
                        returns_to_go=np.array(to_go, dtype=np.float32).reshape(-1, 1),
                        timesteps=np.minimum(np.arange(1, t + 1), config.max_timestep),
                    ),
                    context_size=config.context_size,
                    device="cpu:0",
                    reward_scaler=config.reward_scaler,
                )
            )
        modules = self._algo.impl.modules
        modules.set_eval()
        with torch.no_grad():
            _, logits = modules.transformer(
                torch.cat([r.observations for r in rows]),
                torch.cat([r.actions for r in rows]),
                torch.cat([r.returns_to_go for r in rows]),
                torch.cat([r.timesteps for r in rows]),
                1 - torch.cat([r.masks for r in rows]),
            )
        chosen = logits[:, -1].argmax(dim=1).numpy().astype(np.int64)
        for key, action in zip(keys, chosen, strict=True):
            self._history[key][1].append(int(action))
        return chosen
