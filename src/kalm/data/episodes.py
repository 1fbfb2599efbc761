"""The episode format (DESIGN §5): one Parquet row per episode, the same schema for real and imagined data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kalm.data.atomic import atomic_path
from kalm.data.errors import InputFileError
from kalm.tasks.world import OBS_DIM

SOURCES = ("real", "imagined")
SCHEMA = pa.schema(
    [
        ("episode_id", pa.int64()),
        ("level", pa.string()),
        ("source", pa.string()),
        ("goal", pa.string()),
        ("instruction", pa.string()),
        ("instructions", pa.list_(pa.string())),
        ("observations", pa.list_(pa.list_(pa.float32()))),
        ("actions", pa.list_(pa.int16())),
        ("rewards", pa.list_(pa.float32())),
        ("success", pa.bool_()),
        ("terminated", pa.bool_()),
        ("seed", pa.int64()),
    ]
)


@dataclass
class Episode:
    """One episode: T actions and rewards, T + 1 observations; ``goal`` is the goal spec as JSON."""

    episode_id: int
    level: str
    source: str
    goal: str
    instruction: str
    observations: np.ndarray  # (T + 1, 10) float32
    actions: np.ndarray  # (T,) int16
    rewards: np.ndarray  # (T,) float32
    success: bool
    terminated: bool
    seed: int
    instructions: list[str] = field(default_factory=list)

    @property
    def length(self) -> int:
        """The number of actions T."""
        return len(self.actions)


class EpisodeFileError(InputFileError):
    """An episode file that is missing or does not match the schema; the message names file and column."""


def episodes_to_table(episodes: Sequence[Episode]) -> pa.Table:
    """Build an Arrow table in the episode schema."""
    columns = {
        "episode_id": [e.episode_id for e in episodes],
        "level": [e.level for e in episodes],
        "source": [e.source for e in episodes],
        "goal": [e.goal for e in episodes],
        "instruction": [e.instruction for e in episodes],
        "instructions": [list(e.instructions) for e in episodes],
        "observations": [np.asarray(e.observations, dtype=np.float32).tolist() for e in episodes],
        "actions": [np.asarray(e.actions, dtype=np.int16).tolist() for e in episodes],
        "rewards": [np.asarray(e.rewards, dtype=np.float32).tolist() for e in episodes],
        "success": [bool(e.success) for e in episodes],
        "terminated": [bool(e.terminated) for e in episodes],
        "seed": [int(e.seed) for e in episodes],
    }
    return pa.table(columns, schema=SCHEMA)


def write_episodes(path: str | Path, episodes: Sequence[Episode]) -> None:
    """Atomically write episodes to a Parquet file."""
    for e in episodes:
        _check_episode(e)
    with atomic_path(path) as tmp:
        pq.write_table(episodes_to_table(episodes), tmp, compression="zstd")


def _check_episode(e: Episode) -> None:
    obs = np.asarray(e.observations)
    t = len(e.actions)
    if obs.shape != (t + 1, OBS_DIM) or len(e.rewards) != t:
        raise ValueError(
            f"episode {e.episode_id}: observations {obs.shape}, actions {t}, rewards {len(e.rewards)}: "
            f"expected ({t + 1}, {OBS_DIM}), T, T"
        )


def read_episodes(path: str | Path, made_by: str = "") -> list[Episode]:
    """Read and validate an episode file; errors name the file, the column and the stage that makes it."""
    path = Path(path)
    hint = f" (made by `python cli.py {made_by}`)" if made_by else ""
    if not path.is_file():
        raise EpisodeFileError(f"{path}: missing{hint}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise EpisodeFileError(f"{path}: not a readable Parquet file{hint}: {err}") from None
    for name in SCHEMA.names:
        if name not in table.column_names:
            raise EpisodeFileError(f"{path}: column {name!r} is missing{hint}")
        expected, found = SCHEMA.field(name).type, table.schema.field(name).type
        if found != expected:
            raise EpisodeFileError(f"{path}: column {name!r} has type {found}, expected {expected}{hint}")
    rows = table.select(SCHEMA.names).to_pylist()
    episodes = []
    for row in rows:
        row["observations"] = np.asarray(row["observations"], dtype=np.float32).reshape(-1, OBS_DIM)
        row["actions"] = np.asarray(row["actions"], dtype=np.int16)
        row["rewards"] = np.asarray(row["rewards"], dtype=np.float32)
        episode = Episode(**row)
        try:
            _check_episode(episode)
        except ValueError as err:
            raise EpisodeFileError(f"{path}: column 'observations': {err}") from None
        episodes.append(episode)
    return episodes
