"""``make ui``: the address of the kalm experiment's runs table, printed before the MLflow UI starts.

MLflow 3.17 opens an experiment on its GenAI traces overview ("No data available"), whatever the experiment's tags:
the view follows the address's ``workflowType`` (or the browser's last choice), so the address printed here names
``machine_learning`` and lands on the runs table (checked in headless Chromium 147, README "Comparing runs").
"""

from __future__ import annotations

import sys

from kalm.config import load_params
from kalm.tracking import tracking_uri

UI = "http://127.0.0.1:5000"


def runs_url(experiment: str, uri: str, ui: str = UI) -> str:
    """The runs table of ``experiment`` in the UI at ``ui``, or the experiment list when it has no runs yet."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return f"{ui}/#/experiments (no '{experiment}' experiment yet: run `make repro`)"
    return f"{ui}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


if __name__ == "__main__":
    params = load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")
    print(f"the {params.tracking.experiment} runs: {runs_url(params.tracking.experiment, tracking_uri())}")
