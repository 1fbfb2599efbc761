"""Profiles: partial params files (``profiles/*.yaml``) applied on top of params.yaml as `dvc exp run -S` options.

    python -m kalm.profiles profiles/paper.yaml     # prints: -S llm.backbone=... -S ground.finetune=full ...

The merged result is validated like params.yaml, so a profile with an unknown key or a bad value fails here with
the same one-line error (exit code 2) before any experiment starts.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from kalm.config import ConfigError, flatten, parse_params
from kalm.preflight import preflight


def merge(base: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """``base`` with every key of ``profile`` overriding it (nested mappings merged key by key)."""
    out = dict(base)
    for key, value in profile.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def overrides(profile_path: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    """The `dvc exp run` arguments (``-S key=value`` pairs) that apply a profile, after validating the merge."""
    profile = yaml.safe_load(Path(profile_path).read_text(encoding="utf-8")) or {}
    if not isinstance(profile, dict):
        raise ConfigError(f"{profile_path}: expected a mapping of sections")
    base = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    source = f"{params_path} + {profile_path}"
    problem = preflight(parse_params(merge(base, profile), source))
    if problem:
        raise ConfigError(f"{source}: {problem}")
    args: list[str] = []
    for key, value in flatten(profile).items():
        text = json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)
        args += ["-S", f"{key}={text}"]
    return args


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kalm.profiles PROFILE.yaml", file=sys.stderr)
        return 2
    try:
        print(shlex.join(overrides(argv[0])))
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
