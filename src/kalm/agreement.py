"""Does a re-run agree with the committed result? Per figure: inside the committed 95 % interval or not.

    python -m kalm.agreement [--against HEAD] [--details metrics/eval_details.json]     (make check)

Learnt metrics are deterministic on one CPU model, not across models (RESULTS.md): a re-run elsewhere moves every
figure by a few points. This compares the re-run's success per policy and level (``metrics/eval_details.json`` in the
workspace) with the committed run's (``git show <rev>:metrics/eval_details.json``) and says, per figure, whether it
lies inside the committed Wilson 95 % interval, and how often a re-run as good as the committed one would (≤ 83 %:
one figure in six outside is chance). Exit code 0 when every figure is inside, 1 when one is not, 2 when a file is
missing.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm import paths
from kalm.tracking import cpu_model

# Two runs of the same success rate on as many episodes: the second lands inside the first's 95 % interval with
# probability P(|Z| < 1.96 / sqrt 2) = erf(0.98) ~ 0.83 from episode sampling alone, so about one figure in six lies
# outside by chance; training noise (a re-run on another CPU model is as good as new seeds) makes it fewer still.
CHANCE_INSIDE = math.erf(1.96 / 2)


@dataclass(frozen=True)
class Figure:
    """One policy's success on one level, committed (with its interval) and re-run."""

    policy: str
    level: str
    committed: float
    low: float
    high: float
    rerun: float | None  # None: the re-run has no such figure

    @property
    def inside(self) -> bool:
        return self.rerun is not None and self.low <= self.rerun <= self.high


def compare(committed: dict[str, Any], rerun: dict[str, Any]) -> list[Figure]:
    """Every figure of ``committed`` that has an interval (the trained policies' and the LLM's, per level)."""
    figures = []
    for policy, entry in committed.items():
        if not isinstance(entry, dict) or "seeds" not in entry:  # the behaviour row and episode counts
            continue
        for level, (low, high) in entry["ci95"].items():
            value = rerun.get(policy, {}).get(level)
            figures.append(Figure(policy, level, entry[level], low, high, value))
    return figures


def committed_details(rev: str, path: Path = paths.EVAL_DETAILS) -> dict[str, Any]:
    """The details file as committed at ``rev``."""
    out = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise FileNotFoundError(f"{path} at {rev}: {out.stderr.strip() or 'not in git'}")
    return json.loads(out.stdout)


def kernels() -> str:
    """The vector kernels torch dispatches to (``AVX2``, ``AVX512``, ``DEFAULT`` under ``ATEN_CPU_CAPABILITY=default``):
    with the CPU model, what decides the learnt figures' last bits."""
    import torch  # only here: the comparison itself needs no torch

    return torch.backends.cpu.get_cpu_capability()


def report(figures: list[Figure]) -> str:
    """One line per figure, then the count inside."""
    lines = [f"{'policy':<14}{'level':<18}{'committed':>10}  {'95 % interval':<15}{'re-run':>8}  agrees"]
    for f in figures:
        rerun = "—" if f.rerun is None else f"{f.rerun:.3f}"
        mark = "yes" if f.inside else "NO (missing)" if f.rerun is None else "NO"
        interval = f"[{f.low:.3f}, {f.high:.3f}]"
        lines.append(f"{f.policy:<14}{f.level:<18}{f.committed:>10.3f}  {interval:<15}{rerun:>8}  {mark}")
    inside = sum(f.inside for f in figures)
    lines.append(
        f"{inside} of {len(figures)} figures inside the committed 95 % interval; by episode sampling alone a re-run as "
        f"good as the committed one lands inside {CHANCE_INSIDE:.0%} of the time"
    )
    lines.append(f"this machine: {cpu_model()}; torch kernels {kernels()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="HEAD", help="the git revision of the committed run (default HEAD)")
    parser.add_argument("--details", type=Path, default=paths.EVAL_DETAILS, help="the re-run's details file")
    args = parser.parse_args(argv)
    try:
        committed = committed_details(args.against)
        rerun = json.loads(args.details.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    figures = compare(committed, rerun)
    print(report(figures))
    return 0 if all(f.inside for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
