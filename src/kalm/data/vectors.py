"""The goal-vector table (Parquet): every instruction the policies read, its goal vector, and the encoder's meta.

Made once per pipeline by the `encode` stage, so the four train processes and `evaluate` read the same vectors
instead of each re-embedding every instruction (the grounded LLM: ~7 min per process on one AVX2 thread).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kalm.data.atomic import atomic_path
from kalm.data.errors import InputFileError

META_KEY = b"kalm.encoder"  # schema metadata: the encoder's meta() as JSON (name, size, grounded model fingerprint)


def write_vectors(path: str | Path, table: dict[str, np.ndarray], meta: dict[str, object]) -> None:
    """Atomically write ``{instruction: vector}`` with the encoder's ``meta``."""
    dim = int(meta["embedding_dim"])
    flat = np.stack(list(table.values())).astype(np.float32).reshape(-1) if table else np.zeros(0, np.float32)
    columns = {
        "instruction": pa.array(list(table), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim),
    }
    schema = pa.schema([("instruction", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    arrow = pa.table(columns, schema=schema.with_metadata({META_KEY: json.dumps(meta)}))
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def read_vectors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """(``{instruction: float32 vector}``, the encoder's meta) of a table; a malformed one names the file."""
    path = Path(path)
    try:
        arrow = pq.read_table(path)
        meta = json.loads((arrow.schema.metadata or {})[META_KEY])
        vectors = arrow.column("vector").combine_chunks()
        matrix = vectors.flatten().to_numpy().reshape(len(arrow), int(meta["embedding_dim"]))
    except (pa.ArrowInvalid, OSError, KeyError, ValueError) as err:
        raise InputFileError(f"{path}: not a goal-vector table (made by `python cli.py encode`): {err}") from None
    return dict(zip(arrow.column("instruction").to_pylist(), matrix.astype(np.float32), strict=True)), meta
