"""The `encode` stage: every instruction train and evaluate read, embedded once and read back, not re-embedded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kalm import paths
from kalm.config import Params
from kalm.data import InputFileError, read_episodes, write_episodes
from kalm.data.vectors import read_vectors, write_vectors
from kalm.llm.reader import fingerprint, goal_encoder, live_encoder, stored_encoder
from kalm.rl.encoder import StoredEncoder
from kalm.stages import encode, evaluate
from kalm.tasks.world import GIVEN_LEVELS, LEVELS
from tests.stages.test_train import write_inputs


def test_the_table_holds_every_instruction_train_and_evaluate_read_as_the_encoder_embeds_it(
    tiny_params: Params, tiny_episodes: list, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every level's first 8 tasks: all 8,624 take MiniLM ~2 min on one thread.
    level_tasks = evaluate.level_tasks
    monkeypatch.setattr(evaluate, "level_tasks", lambda level, params: level_tasks(level, params)[:8])
    write_inputs(tiny_episodes)
    metrics = encode.run(tiny_params)
    table, meta = read_vectors(paths.GOAL_VECTORS)
    live = live_encoder(tiny_params.train.encoder)
    assert meta == live.meta() and metrics["instructions"]["distinct"] == len(table)
    assert metrics["instructions"]["evaluation"] == len(
        {t for lv in (*LEVELS, *GIVEN_LEVELS) for t, _ in level_tasks(lv, tiny_params)[:8]}
    )
    read = {e.instruction for e in tiny_episodes}
    read |= {e.instruction for level in paths.NOVEL_LEVELS for e in read_episodes(paths.imagined_episodes(level))}
    read |= {text for level in (*LEVELS, *GIVEN_LEVELS) for text, _ in level_tasks(level, tiny_params)[:8]}
    assert set(table) == read
    texts = sorted(read)
    np.testing.assert_allclose(np.stack([table[t] for t in texts]), live.encode(texts), atol=1e-5)
    # train and evaluate read the table: no encoder is loaded for its texts, one is for a text it lacks.
    stored = goal_encoder(tiny_params.train.encoder)
    assert isinstance(stored, StoredEncoder)
    np.testing.assert_array_equal(stored.encode(texts), np.stack([table[t] for t in texts]))
    assert stored.live is None
    new = "Push the purple ball in front of the cyan ball, please"
    np.testing.assert_allclose(stored.encode([new])[0], live.encode([new])[0], atol=1e-5)


def test_a_table_of_another_encoder_or_grounded_model_is_not_read(tiny_params: Params) -> None:
    vector = {"Push the red ball left of the blue ball": np.full(3, 0.5, np.float32)}
    write_vectors(paths.GOAL_VECTORS, vector, {"encoder": "grounded", "embedding_dim": 3, "encoder_model": "0" * 16})
    assert stored_encoder("grounded") is None  # made by another grounded model
    assert stored_encoder("grounded-mean") is None
    now = fingerprint(paths.GROUNDED_MODEL)
    write_vectors(paths.GOAL_VECTORS, vector, {"encoder": "grounded", "embedding_dim": 3, "encoder_model": now})
    stored = stored_encoder("grounded")
    assert stored is not None and stored.meta() == {"encoder": "grounded", "embedding_dim": 3, "encoder_model": now}
    np.testing.assert_array_equal(stored.encode(list(vector))[0], next(iter(vector.values())))


def test_encode_without_imagined_data_names_the_stage(tiny_params: Params, tiny_episodes: list) -> None:
    write_episodes(paths.OFFLINE_EPISODES, tiny_episodes)
    with pytest.raises(InputFileError, match="imagine"):
        encode.run(tiny_params)
    assert not Path(paths.GOAL_VECTORS).exists()


def test_every_instruction_evaluation_can_draw_is_a_task_of_its_levels(tiny_params: Params) -> None:
    """What the table holds for evaluation (every task) covers the episodes evaluate samples, for any episode count."""
    tasks = {text for level in (*LEVELS, *GIVEN_LEVELS) for text, _ in evaluate.level_tasks(level, tiny_params)}
    assert tasks >= {e.instruction for episodes in evaluate.level_episodes(tiny_params).values() for e in episodes}
