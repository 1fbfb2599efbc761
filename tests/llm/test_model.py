"""The grounded model on the tiny backbone: training changes the right weights, save -> load is exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kalm.llm.batches import episode_samples, make_batches
from kalm.llm.generate import generate_rollouts, predict_next_states
from kalm.llm.model import (
    ModelSpec,
    build_trainable,
    load_grounded,
    numeric_of,
    sample_builder,
    save_grounded,
)
from kalm.llm.train import TrainSettings, train


def trained(
    tiny_base: Path,
    episodes: list,
    finetune: str,
    tmp_path: Path,
    steps_from: int = 6,
    actions: str = "table",
    state_slots: str = "one",
):
    spec = ModelSpec(
        base_dir=str(tiny_base),
        num_layers=0,
        finetune=finetune,
        lora_rank=4,
        lora_alpha=8,
        action_interface=actions,
        state_features="fourier" if actions == "words" else "linear",
        state_slots=state_slots,
    )
    lm, tokenizer = build_trainable(spec, torch.float32, seed=0)
    builder = sample_builder(tokenizer, lm)
    rng = np.random.default_rng(0)
    samples = [s for e in episodes[:steps_from] for s in episode_samples(builder, e, rng)]
    batches = make_batches(samples, 4, tokenizer.pad_token_id, rng)
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    settings = TrainSettings(tmp_path / "trainer", 1e-2, 0.0, 0.0, 1.0, False, True, 0, 1)
    trainer, recorder = train(lm, tokenizer, batches, settings)
    return spec, lm, tokenizer, builder, before, recorder


def changed(lm, before) -> dict[str, bool]:
    return {n: not torch.equal(before[n], p.detach()) for n, p in lm.named_parameters()}


# words: colour / push vectors in and out, the bias and the scale; ball slots: the balls' colour vectors
NUMERIC_TENSORS = {("table", "one"): 7, ("words", "one"): 10, ("words", "balls"): 11}


@pytest.mark.parametrize("actions, state_slots", list(NUMERIC_TENSORS))
def test_lora_training_changes_lora_and_numeric_modules_only(
    tiny_base, tiny_episodes, tmp_path, actions, state_slots
) -> None:
    _, lm, _, _, before, recorder = trained(
        tiny_base, tiny_episodes, "lora", tmp_path, actions=actions, state_slots=state_slots
    )
    diff = changed(lm, before)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_B" in n}
    numeric = {n for n in trainable if "kalm_numeric.modules_to_save" in n}
    assert lora and all(diff[n] for n in lora)
    assert len(numeric) == NUMERIC_TENSORS[actions, state_slots] and all(diff[n] for n in numeric), {
        n: diff[n] for n in numeric
    }
    assert not any(diff[n] for n in diff if n not in trainable)  # the frozen base stays as it was
    assert {"state_loss", "action_loss", "token_loss"} <= {k for row in recorder.rows for k in row}


def test_full_finetuning_trains_every_weight(tiny_base, tiny_episodes, tmp_path) -> None:
    _, lm, _, _, before, _ = trained(tiny_base, tiny_episodes, "full", tmp_path)
    diff = changed(lm, before)
    numeric = [n for n in diff if n.startswith("kalm_numeric.")]
    assert len(numeric) == NUMERIC_TENSORS["table", "one"] and all(diff[n] for n in numeric)
    assert sum(diff.values()) >= len(diff) - 1  # every tensor (the unused placeholder rows aside) moved


def outputs(lm, builder, pad_id: int, states: np.ndarray) -> np.ndarray:
    """Next states predicted for actions 0.. and the action logits after each state's generation prompt."""
    from kalm.llm.batches import collate
    from kalm.llm.model import hidden_states
    from kalm.llm.numeric import normalise

    nxt = predict_next_states(lm, builder, pad_id, states, np.arange(len(states)) % 40)
    batch = collate([builder.generation_prompt("go", s) for s in normalise(states)], pad_id)
    with torch.no_grad():
        logits = numeric_of(lm).action_out(hidden_states(lm, batch)[:, -1]).numpy()
    return np.concatenate([nxt, logits], axis=1)


OUTPUTS = """
import json, sys
import numpy as np
from kalm.llm.model import load_grounded, sample_builder
from tests.llm.test_model import outputs
lm, tok, meta = load_grounded(sys.argv[1], base_dir=sys.argv[2])
states = np.array(json.loads(sys.argv[3]), dtype=np.float32)
print(json.dumps(outputs(lm, sample_builder(tok, lm), tok.pad_token_id, states).tolist()))
"""


@pytest.mark.parametrize(
    "finetune, actions, state_slots",
    [
        ("lora", "words", "one"),
        ("lora", "table", "one"),
        ("lora", "words", "balls"),
        pytest.param("full", "words", "one", marks=pytest.mark.slow),
    ],
)
def test_save_load_round_trip_in_a_fresh_process(
    tiny_base, tiny_episodes, tmp_path, finetune, actions, state_slots
) -> None:
    """Next states and action logits: identical after a reload here and in a fresh process."""
    spec, lm, tokenizer, builder, _, _ = trained(
        tiny_base, tiny_episodes, finetune, tmp_path, steps_from=3, actions=actions, state_slots=state_slots
    )
    out = tmp_path / "grounded"
    save_grounded(lm, tokenizer, out, spec, {"backbone": "tiny"})
    meta = json.loads((out / "kalm.json").read_text())
    assert meta["finetune"] == finetune and meta["obs_dim"] == 10 and meta["n_actions"] == 40
    assert meta["action_interface"] == actions and meta["state_slots"] == state_slots
    states = np.stack([e.observations[0] for e in tiny_episodes[:5]])
    lm.eval()
    in_memory = outputs(lm, builder, tokenizer.pad_token_id, states)
    reloaded, tok2, _ = load_grounded(out, base_dir=tiny_base)
    here = outputs(reloaded, sample_builder(tok2, reloaded), tok2.pad_token_id, states)
    fresh = subprocess.run(
        [sys.executable, "-c", OUTPUTS, str(out), str(tiny_base), json.dumps(states.tolist())],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    np.testing.assert_array_equal(np.array(json.loads(fresh.stdout.strip().splitlines()[-1])), here)
    np.testing.assert_allclose(here, in_memory, atol=1e-4)  # merging LoRA reorders float sums
    assert not np.allclose(in_memory[:, :10], states)  # trained: not the zero-initialised "nothing moves" head


def test_untrained_word_actions_start_near_uniform(tiny_base, tiny_episodes) -> None:
    """The word head's learned scale starts so that the untrained action CE is ln 40 within 10 %."""
    from kalm.llm.batches import collate
    from kalm.llm.model import compute_losses
    from kalm.llm.numeric import WORD_LOGIT_COSINE_SCALE, normalise

    spec = ModelSpec(base_dir=str(tiny_base), num_layers=0, finetune="lora", action_interface="words")
    lm, tokenizer = build_trainable(spec, torch.float32, seed=0)
    builder = sample_builder(tokenizer, lm)
    samples = [builder.generation(e.instruction, normalise(e.observations), e.actions) for e in tiny_episodes[:8]]
    batch = collate(samples, tokenizer.pad_token_id)
    with torch.no_grad():
        loss = float(compute_losses(lm, batch)["action_loss"])
        from kalm.llm.model import hidden_states

        logits = numeric_of(lm).action_out(hidden_states(lm, batch)[batch["action_targets"] != -100])
    assert abs(loss - np.log(40)) < 0.1 * np.log(40), loss
    assert float(logits.abs().max()) < 1.5 * WORD_LOGIT_COSINE_SCALE  # scaled cosines, not the LM's own word logits


def test_rollout_generation_stops_at_success(tiny_base, tiny_episodes) -> None:
    spec = ModelSpec(base_dir=str(tiny_base), num_layers=0, finetune="lora")
    lm, tokenizer = build_trainable(spec, torch.float32, seed=0)
    lm.eval()
    builder = sample_builder(tokenizer, lm)
    starts = np.stack([e.observations[0] for e in tiny_episodes[:3]])
    calls = []

    def stop_on_third(row, prev, action, nxt):
        calls.append(row)
        return row == 1 and sum(c == 1 for c in calls) == 3

    rollouts = generate_rollouts(lm, builder, tokenizer.pad_token_id, ["go"] * 3, starts, 5, stop_on_third)
    lengths = [len(a) for _, a, _ in rollouts]
    assert lengths == [5, 3, 5] and [ok for *_, ok in rollouts] == [False, True, False]
    for (states, actions, _), start in zip(rollouts, starts, strict=True):
        assert states.shape == (len(actions) + 1, 10) and np.array_equal(states[0], start)
        # An untrained residual head predicts "nothing moves".
        np.testing.assert_allclose(states[1:], np.broadcast_to(start, states[1:].shape), atol=1e-5)
    assert numeric_of(lm).residual_state


@pytest.mark.parametrize("residual", [True, False])
def test_s0_from_the_prompt_is_scored_only_by_the_absolute_head(tiny_base, tiny_episodes, residual) -> None:
    from kalm.llm.batches import collate
    from kalm.llm.model import compute_losses
    from kalm.llm.numeric import normalise

    spec = ModelSpec(base_dir=str(tiny_base), num_layers=0, finetune="full", residual_state=residual)
    lm, tokenizer = build_trainable(spec, torch.float32, seed=0)
    with torch.no_grad():
        numeric_of(lm).state_out.weight.normal_(0, 0.1)
    episode = next(e for e in tiny_episodes if e.success)
    builder = sample_builder(tokenizer, lm)
    sample = builder.generation(episode.instruction, normalise(episode.observations), episode.actions)
    batch = collate([sample], tokenizer.pad_token_id)
    moved = {k: v.clone() for k, v in batch.items()}
    first_slot = int(torch.nonzero(batch["kinds"][0] != 0)[0])
    moved["state_targets"][0, first_slot - 1] += 0.5  # only the s_0 target read from the prompt changes
    with torch.no_grad():
        same = compute_losses(lm, batch)["state_loss"] == compute_losses(lm, moved)["state_loss"]
    assert bool(same) is residual
