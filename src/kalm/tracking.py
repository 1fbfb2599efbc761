"""MLflow tracking: one run per stage execution, tagged so `dvc exp show` rows can be joined to runs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kalm.config import Params, flatten

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_tags(stage: str) -> dict[str, str]:
    """The tags of a stage run: stage, git_sha and the DVC experiment it belongs to (if any)."""
    return {
        "stage": stage,
        "git_sha": _git_sha(),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
    }


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flatten a metrics dict to dotted keys, keeping only numbers (what MLflow accepts)."""
    return {
        key: float(value)
        for key, value in flatten(dict(metrics)).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


@contextmanager
def stage_run(stage: str, params: Params, sections: tuple[str, ...]) -> Iterator[Any]:
    """Open the MLflow run of one stage execution and log the params of ``sections`` (``collect.episodes``).

    The store is ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db`` in the working directory.
    """
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    mlflow.set_experiment(params.tracking.experiment)
    exp_name = os.environ.get("DVC_EXP_NAME") or "repro"
    with mlflow.start_run(run_name=f"{stage}__{exp_name}", tags=run_tags(stage)) as run:
        logged = {"seed": params.seed}
        dumped = params.model_dump()
        for section in sections:
            logged.update(flatten(dumped[section], f"{section}."))
        mlflow.log_params(logged)
        yield run


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the numbers of a metrics dict to the active MLflow run, in one batch."""
    import mlflow

    mlflow.log_metrics(numeric_metrics(metrics), step=step)
