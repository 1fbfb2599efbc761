"""MLflow tracking: one run per stage execution, tagged so `dvc exp show` rows can be joined to runs."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kalm.config import Params, flatten

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SERVER_TIMEOUT_S = 5.0
CPU_FLAGS = ("avx512_bf16", "avx512f", "avx2")  # the widest one names the kind: learnt metrics differ between kinds


class TrackingError(RuntimeError):
    """The MLflow tracking server cannot be reached; the message is one line saying what to do."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or the repository's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def check_server(uri: str, timeout: float = SERVER_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when ``uri`` is an MLflow server that does not answer its health check
    (MLflow's own client would retry for minutes before the stage could report anything)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({reason}): start it, point MLFLOW_TRACKING_URI at a "
            "running one, or set tracking.enabled: false"
        ) from None


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def cpu_model() -> str:
    """The CPU's model name, family and model, and its widest vector extension (``AMD EPYC, family 25 model 1,
    avx2``: "AMD EPYC" alone is Zen 3 or Zen 4), from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("flags", "").split()
    widest = next((f for f in CPU_FLAGS if f in flags), "no avx2")
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return f"{fields.get('model name', 'unknown')}, family {family} model {model}, {widest}"


def run_tags(stage: str) -> dict[str, str]:
    """The tags of a stage run: stage, git_sha, the CPU and the DVC experiment it belongs to (if any)."""
    return {
        "stage": stage,
        "git_sha": _git_sha(),
        "cpu": cpu_model(),
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

    The store is ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db`` in the working directory. With
    ``tracking.enabled: false`` nothing is tracked: the context yields None and the logging helpers do nothing.
    """
    if not params.tracking.enabled:
        yield None
        return
    import mlflow

    uri = tracking_uri()
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(params.tracking.experiment)
    exp_name = os.environ.get("DVC_EXP_NAME") or "repro"
    with mlflow.start_run(run_name=f"{stage}__{exp_name}", tags=run_tags(stage)) as run:
        logged = {"seed": params.seed}
        dumped = params.model_dump()
        for section in sections:
            logged.update(flatten(dumped[section], f"{section}."))
        mlflow.log_params(logged)
        yield run


def _active():
    """The mlflow module when a stage run is open, else None (tracking disabled)."""
    import mlflow

    return mlflow if mlflow.active_run() is not None else None


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the numbers of a metrics dict to the active MLflow run, in one batch (nothing when untracked)."""
    if (mlflow := _active()) is not None:
        mlflow.log_metrics(numeric_metrics(metrics), step=step)


def set_tags(tags: Mapping[str, str]) -> None:
    """Tag the active run (nothing when untracked)."""
    if (mlflow := _active()) is not None:
        mlflow.set_tags(dict(tags))


def log_artifact(path: str | os.PathLike, artifact_path: str | None = None) -> None:
    """Attach a file (or every file of a folder) to the active run (nothing when untracked)."""
    if (mlflow := _active()) is not None:
        if os.path.isdir(path):
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
