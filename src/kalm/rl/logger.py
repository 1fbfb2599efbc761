"""A d3rlpy ``LoggerAdapter`` of ours: per-epoch metrics into the active MLflow run and into a learning curve.

d3rlpy ships File, Tensorboard, WanDB, Noop and Combine adapters, no MLflow one. Metrics are per-epoch means
(``loss``; ``td_loss`` and ``conservative_loss`` for CQL; whatever evaluators add, e.g. ``mean_q``); they are logged
as ``<prefix><name>`` at the training step, and kept in ``rows`` for the CSV that ``dvc plots`` reads.
"""

from __future__ import annotations

from typing import Any

from kalm.tracking import log_metrics


class MLflowAdapter:
    """Implements d3rlpy's ``LoggerAdapter`` protocol; ``save_model`` does nothing (policies are saved by us)."""

    def __init__(self, prefix: str = "", log_to_mlflow: bool = True):
        self.prefix = prefix
        self.log_to_mlflow = log_to_mlflow
        self.rows: list[dict[str, float]] = []
        self._pending: dict[str, float] = {}

    def write_params(self, params: dict[str, Any]) -> None:
        """d3rlpy's config; the stage logs its own params, so this is not repeated to MLflow."""

    def before_write_metric(self, epoch: int, step: int) -> None:
        self._pending = {}

    def write_metric(self, epoch: int, step: int, name: str, value: float) -> None:
        if not name.startswith("time_"):  # d3rlpy's own timers: noise for the curves
            self._pending[name] = float(value)

    def after_write_metric(self, epoch: int, step: int) -> None:
        self.rows.append({"epoch": epoch, "step": step, **self._pending})
        if self.log_to_mlflow and self._pending:
            log_metrics({f"{self.prefix}{k}": v for k, v in self._pending.items()}, step=step)

    def save_model(self, epoch: int, algo: Any) -> None:
        """Not used: d3rlpy's save pickles; the stage writes safetensors at the end."""

    def close(self) -> None:
        """Nothing to release."""

    def watch_model(self, epoch: int, step: int) -> None:
        """Gradient histograms are not logged."""


class MLflowAdapterFactory:
    """Implements d3rlpy's ``LoggerAdapterFactory``; ``adapter`` is the one created for the last ``fit``."""

    def __init__(self, prefix: str = "", log_to_mlflow: bool = True):
        self.prefix = prefix
        self.log_to_mlflow = log_to_mlflow
        self.adapter: MLflowAdapter | None = None

    def create(self, algo: Any, experiment_name: str, n_steps_per_epoch: int) -> MLflowAdapter:
        self.adapter = MLflowAdapter(self.prefix, self.log_to_mlflow)
        return self.adapter
