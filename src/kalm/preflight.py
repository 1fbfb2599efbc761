"""Pre-flight: what params name on disk (the backbone, the goal encoder) exists, before any work.

Kept out of `kalm.config`, which checks shapes and ranges only and imports nothing of the pipeline.
"""

from __future__ import annotations

from kalm.config import Params


def preflight(params: Params) -> str | None:
    """The first problem with what params name on disk, in one line, or None."""
    from kalm.llm.backbone import describe_backbone
    from kalm.rl.encoder import describe_encoder

    if problem := describe_backbone(params.llm.backbone, params.llm.allow_network):
        return f"llm.backbone: {problem}"
    if problem := describe_encoder(params.train.encoder):
        return f"train.encoder: {problem}"
    return None
