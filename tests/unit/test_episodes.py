"""The episode Parquet format: round trip and validation errors that name file and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kalm.data import Episode, EpisodeFileError, atomic_path, read_episodes, write_episodes


def episode(i: int, length: int) -> Episode:
    rng = np.random.default_rng(i)
    return Episode(
        episode_id=i,
        level="train",
        source="real",
        goal='{"type":"relation","src":"red","dst":"blue","direction":"left"}',
        instruction="Push the red ball left the blue ball",
        instructions=["Push the red ball left the blue ball", "Move the red ball left the blue ball"],
        observations=rng.uniform(-0.5, 0.5, (length + 1, 10)).astype(np.float32),
        actions=rng.integers(0, 40, length).astype(np.int16),
        rewards=rng.normal(size=length).astype(np.float32),
        success=bool(i % 2),
        terminated=bool(i % 2),
        seed=1000 + i,
    )


def test_round_trip_is_identical(tmp_path: Path) -> None:
    original = [episode(i, n) for i, n in enumerate([1, 5, 50])]
    write_episodes(tmp_path / "e.parquet", original)
    loaded = read_episodes(tmp_path / "e.parquet")
    for a, b in zip(original, loaded, strict=True):
        for name in ("observations", "actions", "rewards"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            assert getattr(a, name).dtype == getattr(b, name).dtype
        assert (a.episode_id, a.goal, a.instructions, a.success, a.seed) == (
            b.episode_id,
            b.goal,
            b.instructions,
            b.success,
            b.seed,
        )


def test_errors_name_the_file_column_and_stage(tmp_path: Path) -> None:
    with pytest.raises(EpisodeFileError, match=r"nope\.parquet: missing \(made by `python cli.py collect`\)"):
        read_episodes(tmp_path / "nope.parquet", made_by="collect")
    path = tmp_path / "bad.parquet"
    write_episodes(path, [episode(0, 3)])
    pq.write_table(pq.read_table(path).drop_columns(["rewards"]), path)
    with pytest.raises(EpisodeFileError, match=r"bad\.parquet: column 'rewards' is missing"):
        read_episodes(path)
    table = pq.read_table(tmp_path / "bad.parquet")
    pq.write_table(table.append_column("rewards", pa.array([["x"]], pa.list_(pa.string()))), path)
    with pytest.raises(EpisodeFileError, match=r"column 'rewards' has type list<element: string>"):
        read_episodes(path)
    path.write_text("not parquet")
    with pytest.raises(EpisodeFileError, match="not a readable Parquet file"):
        read_episodes(path)


def test_inconsistent_lengths_are_refused(tmp_path: Path) -> None:
    bad = episode(0, 3)
    bad.rewards = bad.rewards[:2]
    with pytest.raises(ValueError, match="episode 0"):
        write_episodes(tmp_path / "e.parquet", [bad])
    assert not (tmp_path / "e.parquet").exists()


def test_atomic_path_keeps_the_old_output_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]
    folder = tmp_path / "model"
    for content in ("v1", "v2"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "w.txt").write_text(content)
    assert (folder / "w.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]
