"""Every output path of the pipeline, relative to the repository root; dvc.yaml repeats them (a test checks)."""

from pathlib import Path

DATA = Path("data")
OFFLINE_EPISODES = DATA / "offline" / "episodes.parquet"
IMAGINED = DATA / "imagined"
NOVEL_LEVELS = ("rephrase", "easy", "hard")


def imagined_episodes(level: str) -> Path:
    """The imagined rollouts of one novel level (``data/imagined/<level>.parquet``)."""
    return IMAGINED / f"{level}.parquet"


METRICS = Path("metrics")


def metrics_file(stage: str) -> Path:
    """The metrics JSON of a stage (``metrics/<stage>.json``), read by DVC and logged to MLflow."""
    return METRICS / f"{stage}.json"


MODELS = Path("models")
BASE_MODEL = MODELS / "base"
GROUNDED_MODEL = MODELS / "grounded"

PLOTS = Path("plots")
GROUND_LOSS = PLOTS / "ground_loss.csv"

REPORTS = Path("reports")
IMAGINE_REPORTS = REPORTS / "imagine"
