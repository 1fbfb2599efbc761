"""The pipeline's figures (matplotlib, headless): episode strips and the success bar chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_strip(frames: Sequence[np.ndarray], title: str, out: Path, max_frames: int = 8) -> None:
    """Up to ``max_frames`` evenly spaced frames of an episode side by side, titled, as a PNG."""
    plt = _pyplot()
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)))
    fig, axes = plt.subplots(1, len(picks), figsize=(1.8 * len(picks), 2.3), squeeze=False)
    for ax, t in zip(axes[0], picks, strict=True):
        ax.imshow(frames[t])
        ax.set_title(f"t={t}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)


def bar_chart(summary: dict[str, Any], levels: Sequence[str], out: Path) -> None:
    """Success per level per policy with 95 % intervals (the paper's Fig. 4 layout)."""
    plt = _pyplot()
    names = list(summary)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.4 * len(levels)), 3.5))
    x = np.arange(len(levels))
    for j, name in enumerate(names):
        values = [summary[name][lv] for lv in levels]
        lo = [summary[name][lv] - summary[name]["ci95"][lv][0] for lv in levels]
        hi = [summary[name]["ci95"][lv][1] - summary[name][lv] for lv in levels]
        ax.bar(x + (j - (len(names) - 1) / 2) * width, values, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks(x, levels)
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=len(names))
    ax.set_title("Success per level (mean over seeds, 95 % Wilson interval)", fontsize=9)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
