"""The grounded LLM as the policies' goal encoder (``train.encoder: grounded``) on the tiny backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kalm import paths
from kalm.config import Params
from kalm.data import InputFileError
from kalm.llm.model import load_grounded, sample_builder
from kalm.llm.reader import fingerprint, goal_encoder, prompt_vectors
from kalm.rl.algos import load_policy
from kalm.stages import evaluate, train

TEXTS = ["Push the red ball left of the blue ball", "Could you move the green ball so it sits behind the cyan one"]


@pytest.fixture
def grounded(tiny_grounded: Path) -> None:
    """models/base and models/grounded of the tiny ground stage in the working folder."""
    for folder in (paths.BASE_MODEL, paths.GROUNDED_MODEL):
        shutil.copytree(tiny_grounded / folder, folder)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_instruction_vectors_are_unit_length_and_do_not_depend_on_the_batch(grounded: None, pooling: str) -> None:
    lm, tokenizer, _ = load_grounded(paths.GROUNDED_MODEL, base_dir=paths.BASE_MODEL)
    builder = sample_builder(tokenizer, lm)
    both = prompt_vectors(lm, builder, tokenizer.pad_token_id, TEXTS, pooling)
    alone = prompt_vectors(lm, builder, tokenizer.pad_token_id, TEXTS[:1], pooling)
    assert both.shape == (2, lm.config.hidden_size) and both.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    # The short text is right-padded beside the long one: its vector reads its own tokens, never a pad.
    np.testing.assert_allclose(both[0], alone[0], atol=1e-5)
    assert float(both[0] @ both[1]) < 0.9999


def test_the_grounded_encoder_caches_one_vector_per_text(grounded: None) -> None:
    encoder = goal_encoder("grounded")
    table = encoder.table([TEXTS[0], TEXTS[1], TEXTS[0]])
    assert list(table) == TEXTS and encoder.dim == table[TEXTS[0]].shape[0]
    np.testing.assert_array_equal(encoder.encode([TEXTS[1]])[0], table[TEXTS[1]])


def test_policies_record_the_grounded_model_and_evaluation_refuses_another(
    grounded: None, tiny_params: Params, tiny_episodes: list
) -> None:
    update = {"encoder": "grounded", "seeds": 1}
    params = tiny_params.model_copy(update={"train": tiny_params.train.model_copy(update=update)})
    train.train_policies(params, "baseline", "bc", tiny_episodes, [], Path("p"), Path("c"), log_to_mlflow=False)
    folder = Path("p") / "seed0"
    _, meta = load_policy(folder)
    encoder = goal_encoder("grounded")
    assert (meta["encoder"], meta["embedding_dim"]) == ("grounded", encoder.dim)
    assert meta["encoder_model"] == fingerprint(paths.GROUNDED_MODEL)
    table = evaluate.Embedder().table(meta, [TEXTS[0]], folder)  # what evaluation reads: the training vectors
    np.testing.assert_array_equal(table[TEXTS[0]], encoder.encode([TEXTS[0]])[0])
    with pytest.raises(InputFileError, match="another grounded model"):
        evaluate.Embedder().table({**meta, "encoder_model": "0" * 16}, [TEXTS[0]], folder)
