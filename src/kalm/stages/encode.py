"""The `encode` stage: every instruction the policies read, embedded once by the goal encoder ``train.encoder`` names.

    python cli.py encode [--params params.yaml]

Reads the offline and imagined episodes' instructions and every instruction `evaluate` can draw (all seven levels) and
writes ``data/goal_vectors.parquet`` (``kalm.data.vectors``) and ``metrics/encode.json`` (distinct instructions by
source). The four `train` processes and `evaluate` read their
vectors from it; a text it lacks (a user's suite) is embedded by the same encoder and model when first needed. With
the grounded LLM as encoder this takes the ~7 min per process each of them spent re-embedding (one AVX2 thread).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kalm import paths
from kalm.config import Params
from kalm.data import read_episodes, write_json
from kalm.data.vectors import write_vectors
from kalm.tasks.world import GIVEN_LEVELS, LEVELS
from kalm.tracking import log_metrics, set_tags, stage_run

STAGE = "encode"
log = logging.getLogger(__name__)


def instructions(params: Params) -> dict[str, list[str]]:
    """The instructions train and evaluate read, by source: offline, imagined, evaluation."""
    from kalm.stages.evaluate import level_tasks

    imagined = [read_episodes(paths.imagined_episodes(level), made_by="imagine") for level in paths.NOVEL_LEVELS]
    return {
        "offline": [e.instruction for e in read_episodes(paths.OFFLINE_EPISODES, made_by="collect")],
        "imagined": [e.instruction for episodes in imagined for e in episodes],
        # every task of every level, not just the sampled episodes': a sweep of evaluate.episodes re-encodes nothing
        "evaluation": [text for level in (*LEVELS, *GIVEN_LEVELS) for text, _ in level_tasks(level, params)],
    }


def run(params: Params) -> dict[str, Any]:
    """Embed every distinct instruction once and write the table; returns how many there were, by source."""
    from kalm.llm.reader import live_encoder

    texts = instructions(params)
    with stage_run(STAGE, params, sections=("train",)):
        start = time.perf_counter()
        encoder = live_encoder(params.train.encoder)  # never the old table: it is what this stage replaces
        table = encoder.table([t for source in texts.values() for t in source])
        write_vectors(paths.GOAL_VECTORS, table, encoder.meta())
        counts = {**{source: len(set(t)) for source, t in texts.items()}, "distinct": len(table)}
        metrics = {"encoder": encoder.name, "embedding_dim": encoder.dim, "instructions": counts}
        write_json(paths.metrics_file(STAGE), metrics)
        set_tags({"encoder": encoder.name})
        log_metrics({**counts, "embedding_dim": encoder.dim, "seconds": time.perf_counter() - start})
    log.info("encode: %s", metrics)
    return metrics
