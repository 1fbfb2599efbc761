"""Imaginary rollout generation speed: the cached, batched loop of `imagine` against a naive loop (batch 1, the
whole sequence re-run for every new element), measured in the same run; prints rollouts/s and their ratio.

    python benchmarks/imagine.py [--model models/grounded] [--base models/base] [--batch 64] [--steps 10]
                                 [--naive 2]

Uses the grounded model when it exists (LoRA merged, as `imagine` loads it), else the base model with fresh
numeric modules of the same shape. Every rollout runs exactly ``--steps`` steps (no early stop), from real
initial states and the shipped rephrase instructions. Target: cached / naive >= 10x.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from kalm.env import CLEVRRobotEnv
from kalm.llm.generate import generate_rollout_uncached, generate_rollouts
from kalm.llm.model import ModelSpec, build_trainable, load_grounded, sample_builder
from kalm.tasks import shipped_suite


def load(model: Path, base: Path):
    if (model / "kalm.json").is_file():
        lm, tokenizer, _ = load_grounded(model, base_dir=base)
        return lm, tokenizer, f"grounded model {model}"
    lm, tokenizer = build_trainable(ModelSpec(base_dir=str(base), num_layers=0, finetune="full"), torch.float32, 0)
    return lm.eval(), tokenizer, f"base model {base} with fresh numeric modules"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/grounded"))
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--naive", type=int, default=2, help="rollouts timed in the naive loop")
    args = parser.parse_args()

    lm, tokenizer, what = load(args.model, args.base)
    builder = sample_builder(tokenizer, lm)
    env = CLEVRRobotEnv()
    starts = np.stack([env.reset(seed=i)[0] for i in range(args.batch)])
    texts = [t for t, _ in shipped_suite("rephrase").expand()][: args.batch]
    texts = (texts * (args.batch // len(texts) + 1))[: args.batch]

    generate_rollouts(lm, builder, tokenizer.pad_token_id, texts[:2], starts[:2], 1)  # warm-up
    start = time.perf_counter()
    cached = generate_rollouts(lm, builder, tokenizer.pad_token_id, texts, starts, args.steps)
    cached_rate = len(cached) / (time.perf_counter() - start)

    start = time.perf_counter()
    for text, s0 in zip(texts[: args.naive], starts[: args.naive], strict=True):
        generate_rollout_uncached(lm, builder, text, s0, args.steps)
    naive_rate = args.naive / (time.perf_counter() - start)

    print(f"{what}; {torch.get_num_threads()} threads; {args.steps}-step rollouts")
    print(f"cached, batch {args.batch}: {cached_rate:8.2f} rollouts/s")
    print(f"naive,  batch 1, no cache: {naive_rate:8.2f} rollouts/s")
    print(f"ratio: {cached_rate / naive_rate:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
