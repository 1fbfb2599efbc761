"""The episode format (Parquet) with its reader and writer, and atomic output helpers."""

from kalm.data.atomic import atomic_path, write_json
from kalm.data.episodes import SCHEMA, Episode, EpisodeFileError, read_episodes, write_episodes
from kalm.data.errors import InputFileError

__all__ = [
    "SCHEMA",
    "Episode",
    "EpisodeFileError",
    "InputFileError",
    "atomic_path",
    "read_episodes",
    "write_episodes",
    "write_json",
]
