"""Shared fixtures: every test runs in its own temporary folder, offline, with its own MLflow store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
# One thread per process (DESIGN §7): on 2 shared cores, two OpenMP threads per torch process spin against each
# other and against the other processes, 3x slower on the tiny models; inherited by every subprocess (dvc).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["TYPER_STANDARD_TRACEBACK"] = "1"

import pytest  # noqa: E402
import yaml  # noqa: E402

from kalm.config import Params, parse_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
TINY_OVERRIDES = {
    "collect": {"episodes": 12},
    "llm": {"backbone": "tiny", "num_layers": 0},
    "ground": {
        "episodes": 10,
        "epochs": 1,
        "batch_size": 4,
        "diagnostic_episodes": 3,
        "logging_steps": 1,
        "head_episodes": 4,
        "head_steps": 20,
        "world_steps": 20,
        "head_units": [16],
        "policy_episodes": 3,
    },
    "imagine": {"rephrase": 4, "easy": 4, "hard": 2, "batch_size": 4, "render": 1},
    # MiniLM: a stage test needs no grounded model in its folder (the pipeline test and tests/llm/test_reader.py read
    # instructions with the grounded LLM, the default)
    "train": {"seeds": 1, "steps": 20, "steps_per_epoch": 10, "min_imagined": 1, "encoder": "all-minilm-l6-v2"},
    "evaluate": {"episodes": 3, "easy_episodes": 4, "render": 1},
}


def repo_params() -> dict:
    """The repository's params.yaml as a dict."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params_dict() -> dict:
    """params.yaml with tiny budgets for tests."""
    data = repo_params()
    for section, values in TINY_OVERRIDES.items():
        data[section].update(values)
    return data


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store created and migrated once per test run (creating one costs seconds)."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}")
    client.search_experiments()
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """Run each test in its own folder; MLflow-using tests get a copy of the migrated store."""
    monkeypatch.chdir(tmp_path)
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(var, raising=False)
    if "mlflow_store" in request.fixturenames:
        return tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused-mlflow.db'}")
    return tmp_path


@pytest.fixture
def mlflow_store(tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A per-test MLflow tracking URI backed by a copy of the migrated store."""
    db = tmp_path / "mlflow.db"
    shutil.copy(migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def tiny_params() -> Params:
    """Validated tiny params."""
    return parse_params(tiny_params_dict(), "tiny params")


@pytest.fixture
def tiny_params_file(tmp_path: Path) -> Path:
    """Tiny params written to a file in the test's folder."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama + in-process tokenizer, built once per test run."""
    from kalm.llm.backbone import build_tiny

    path = tmp_path_factory.mktemp("tiny") / "base"
    build_tiny(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_episodes(tmp_path_factory: pytest.TempPathFactory) -> list:
    """A few real behaviour-policy episodes (collected once per test run)."""
    from kalm.stages.collect import collect_episodes

    params = parse_params({**tiny_params_dict(), "collect": {"episodes": 24, "epsilon": 0.1, "policy": "legible"}})
    return collect_episodes(params, progress=False)


@pytest.fixture(scope="session")
def tiny_grounded(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_episodes: list) -> Path:
    """A folder holding models/base and models/grounded of the `ground` stage on tiny params (fitted heads
    included), made once per test run."""
    from kalm import paths
    from kalm.data import write_episodes
    from kalm.stages import ground

    root = tmp_path_factory.mktemp("grounded")
    here = os.getcwd()
    os.chdir(root)
    try:
        shutil.copytree(tiny_base, paths.BASE_MODEL)
        write_episodes(paths.OFFLINE_EPISODES, tiny_episodes)
        ground.run(parse_params({**tiny_params_dict(), "tracking": {"enabled": False, "experiment": "kalm"}}))
    finally:
        os.chdir(here)
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The pipeline test first (one module, ~5 min): under `make test`'s two xdist workers one runs it while the other
    runs every other file beside it."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/pipeline/"))
