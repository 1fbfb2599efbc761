"""The grounded LLM's reading of an instruction as the policies' goal embedding (``train.encoder: grounded``).

The vector is the grounded LM's last hidden state at the final token of the generation prompt ("... Instruction:
<text>. Trajectory:"), before any state, L2-normalised (576-d for SmolLM2-135M): where the LM has read the
instruction and is about to write the trajectory (``grounded-mean``: the mean over the prompt's tokens instead).
Measured (learnability §3.4): two phrasings of one goal at cosine 0.990, a colour swap 0.971, other goals 0.556
(MiniLM: 0.875 / 0.994 / 0.832). Always fp32 on the CPU, one forward per distinct text, so training and evaluation
embed alike; a policy records the grounded model's fingerprint and evaluation refuses another model's vectors.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kalm import paths
from kalm.data.vectors import read_vectors
from kalm.rl.encoder import GROUNDED_MEAN, GROUNDED_NAMES, CachedEncoder, GoalEncoder, StoredEncoder

BATCH = 64
log = logging.getLogger(__name__)


def prompt_vectors(
    lm: Any, builder: Any, pad_id: int, texts: Sequence[str], pooling: str = "last", batch_size: int = BATCH
) -> np.ndarray:
    """The L2-normalised last hidden state at the last token of each text's generation prompt (``pooling="mean"``:
    its mean over the prompt's tokens): (N, H) float32."""
    import torch

    from kalm.llm.batches import collate
    from kalm.llm.model import hidden_states

    samples = [builder.instruction_prompt(text) for text in texts]
    out = []
    with torch.inference_mode():
        for lo in range(0, len(samples), batch_size):
            batch = collate(samples[lo : lo + batch_size], pad_id)
            hidden, mask = hidden_states(lm, batch).float(), batch["attention_mask"]
            if pooling == "mean":
                vectors = (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
            else:
                last = mask.sum(dim=1) - 1  # right-padded: each row's final prompt token
                vectors = hidden[torch.arange(len(last)), last]
            out.append(torch.nn.functional.normalize(vectors, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def fingerprint(model_dir: Path) -> str:
    """A short hash of every file of a grounded model folder: which model a policy's goal vectors came from."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(path.relative_to(model_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class InstructionEncoder(CachedEncoder):
    """``CachedEncoder`` over the grounded LLM in ``model_dir`` (fp32, CPU)."""

    def __init__(self, name: str, model_dir: Path = paths.GROUNDED_MODEL, base_dir: Path = paths.BASE_MODEL):
        from kalm.llm.model import load_grounded, sample_builder

        super().__init__()
        self.name = name
        self.pooling = "mean" if name == GROUNDED_MEAN else "last"
        self.fingerprint = fingerprint(model_dir)
        self._lm, tokenizer, _ = load_grounded(model_dir, base_dir=base_dir)
        self._builder = sample_builder(tokenizer, self._lm)
        self._pad_id = tokenizer.pad_token_id

    @property
    def dim(self) -> int:
        return int(self._lm.config.hidden_size)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return prompt_vectors(self._lm, self._builder, self._pad_id, texts, self.pooling)


def live_encoder(name: str) -> CachedEncoder:
    """The goal encoder ``train.encoder`` names, loaded: the grounded LLM, or a sentence-transformers model."""
    return InstructionEncoder(name) if name in GROUNDED_NAMES else GoalEncoder(name)


def stored_encoder(name: str, vectors: Path = paths.GOAL_VECTORS) -> StoredEncoder | None:
    """The table the ``encode`` stage made, when it holds ``name``'s vectors (for a grounded encoder, of the model
    now in models/grounded); else None."""
    if not Path(vectors).is_file():
        return None
    table, meta = read_vectors(vectors)
    model = meta.get("encoder_model")
    if meta["encoder"] != name or (model is not None and model != fingerprint(paths.GROUNDED_MODEL)):
        log.info("%s holds vectors of another encoder or model: embedding with %s", vectors, name)
        return None
    return StoredEncoder(table, meta, lambda: live_encoder(name))


def goal_encoder(name: str, vectors: Path = paths.GOAL_VECTORS) -> CachedEncoder:
    """Encoder ``name``: its stored table (texts it lacks embedded live) or, without one, the live encoder."""
    return stored_encoder(name, vectors) or live_encoder(name)
