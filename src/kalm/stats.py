"""Success statistics over episodes and seeds: Wilson intervals, means per level, the novel-goal mean."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kalm.tasks.world import GIVEN_SUFFIX, NOVEL_LEVELS

SeedResults = dict[str, dict[str, np.ndarray]]
"""``{seedK: {level: success per episode}}`` of one policy."""


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score 95 % interval of a success rate."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def summarise(results: dict[str, SeedResults], levels: Sequence[str]) -> dict[str, Any]:
    """Per policy: mean over seeds per level, novel mean (``novel_mean_given`` over the ``_given`` levels), Wilson
    95 % intervals on the pooled episodes, per-seed numbers."""
    summary: dict[str, Any] = {}
    for name, seeds in results.items():
        entry: dict[str, Any] = {}
        for level in levels:
            entry[level] = round(float(np.mean([s[level].mean() for s in seeds.values()])), 4)
        for suffix in ("", GIVEN_SUFFIX):  # held-out phrasings, then the instructions imagination was given
            novel = [lv + suffix for lv in NOVEL_LEVELS if lv + suffix in levels]
            if novel:
                entry["novel_mean" + suffix] = round(float(np.mean([entry[lv] for lv in novel])), 4)
        pooled = {lv: np.concatenate([s[lv] for s in seeds.values()]) for lv in levels}
        entry["ci95"] = {lv: wilson(int(p.sum()), len(p)) for lv, p in pooled.items()}
        entry["seeds"] = {seed: {lv: round(float(s[lv].mean()), 4) for lv in levels} for seed, s in seeds.items()}
        summary[name] = entry
    return summary
