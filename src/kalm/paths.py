"""Every output path of the pipeline, relative to the repository root; dvc.yaml repeats them (a test checks)."""

from pathlib import Path

from kalm.tasks.world import NOVEL_LEVELS as NOVEL_LEVELS  # the imagined levels: data/imagined/<level>.parquet

DATA = Path("data")
OFFLINE_EPISODES = DATA / "offline" / "episodes.parquet"
IMAGINED = DATA / "imagined"
GOAL_VECTORS = DATA / "goal_vectors.parquet"  # encode: every instruction the policies read, embedded once


def imagined_episodes(level: str) -> Path:
    """The imagined rollouts of one novel level (``data/imagined/<level>.parquet``)."""
    return IMAGINED / f"{level}.parquet"


METRICS = Path("metrics")


def metrics_file(stage: str) -> Path:
    """The metrics JSON of a stage (``metrics/<stage>.json``): committed and logged to MLflow; DVC reads only
    evaluate's summary as a metric (``EVAL_METRICS``)."""
    return METRICS / f"{stage}.json"


MODELS = Path("models")
BASE_MODEL = MODELS / "base"
GROUNDED_MODEL = MODELS / "grounded"

PLOTS = Path("plots")
GROUND_LOSS = PLOTS / "ground_loss.csv"

REPORTS = Path("reports")
IMAGINE_REPORTS = REPORTS / "imagine"

# train: one DVC matrix entry per variant x algo; each trains every seed.
VARIANTS = ("baseline", "kalm")  # baseline first: evaluate scores per-level kalm's untrained levels by it
ALGOS = ("bc", "cql", "bcq", "dt")  # train.algos picks which of them the pipeline trains
POLICIES = MODELS / "policies"
TRAIN_METRICS = METRICS / "train"
TRAIN_CURVES = PLOTS / "train"


def policy_name(variant: str, algo: str) -> str:
    """``<variant>-<algo>``, the name of a DVC matrix entry (``train@baseline-cql``) and of its outputs."""
    return f"{variant}-{algo}"


def policy_dir(variant: str, algo: str) -> Path:
    """The policies of one variant and algo, one ``seed<k>/`` folder per seed (``models/policies/kalm-cql``)."""
    return POLICIES / policy_name(variant, algo)


def train_metrics(variant: str, algo: str) -> Path:
    """Training metrics of one variant and algo (``metrics/train/kalm-cql.json``)."""
    return TRAIN_METRICS / f"{policy_name(variant, algo)}.json"


def train_curves(variant: str, algo: str) -> Path:
    """Learning curves of one variant and algo, one ``seed<k>.csv`` per seed (``plots/train/kalm-cql/``)."""
    return TRAIN_CURVES / policy_name(variant, algo)


# evaluate (metrics/eval.json, as issue 5 names it, not metrics/evaluate.json)
EVAL_METRICS = METRICS / "eval.json"  # the summary: the only metrics file DVC reads (dvc.yaml)
EVAL_DETAILS = METRICS / "eval_details.json"  # intervals, per-seed figures: an output, not a DVC metric
EVAL_SUCCESS = PLOTS / "eval_success.csv"
EVAL_REPORTS = REPORTS / "eval"
EVAL_CHART = REPORTS / "eval_success.png"
