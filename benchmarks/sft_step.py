"""Grounding SFT step speed: samples/s, positions/s and model FLOPs utilisation against a matmul peak measured in
the same run.

    python benchmarks/sft_step.py [--base models/base] [--layers 0] [--finetune lora] [--precision auto]
                                  [--batch 16] [--length 64] [--steps 6]

Batches are synthetic KALM samples of one length: a third text, the rest state/action slots; the LM head runs on
20 answer tokens of every fourth batch (the explanation pattern's share). Model FLOPs: 2 * P_decoder * positions
+ 2 * P_lm_head * text targets for the forward pass, times 3 for full fine-tuning (forward + both backward
GEMMs) or 2 for LoRA (the frozen weights need no weight gradient). Target: >= 50 % of the bf16 peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from kalm.llm.batches import collate
from kalm.llm.model import ModelSpec, backbone_of, build_trainable, compute_losses, placeholder_ids
from kalm.llm.prompts import ACTION, IGNORE, STATE, TEXT, Sample


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n x n matmul in ``dtype``, best of ``reps``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best / 1e9


def synthetic_batch(batch: int, length: int, state_id: int, action_id: int, text_targets: int, vocab: int, rng):
    samples = []
    n_text = length // 3
    for _ in range(batch):
        kinds = np.array(
            [TEXT] * n_text + [STATE, ACTION] * ((length - n_text) // 2) + [STATE] * ((length - n_text) % 2)
        )
        ids = np.where(kinds == STATE, state_id, np.where(kinds == ACTION, action_id, rng.integers(10, vocab, length)))
        labels = np.full(length, IGNORE)
        if text_targets:
            labels[-text_targets:] = rng.integers(10, vocab, text_targets)
        samples.append(
            Sample(
                pattern=0,
                input_ids=ids.astype(np.int64),
                kinds=kinds.astype(np.int8),
                state_inputs=rng.uniform(-1, 1, (length, 10)).astype(np.float32),
                action_inputs=rng.integers(0, 40, length),
                state_targets=rng.uniform(-1, 1, (length, 10)).astype(np.float32),
                state_mask=kinds == ACTION,
                action_targets=np.where(kinds == STATE, rng.integers(0, 40, length), IGNORE),
                labels=labels.astype(np.int64),
            )
        )
    return collate(samples, pad_id=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="models/base")
    parser.add_argument("--layers", type=int, default=0)
    parser.add_argument("--finetune", choices=["lora", "full"], default="lora")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16)
    # Without native bf16 (e.g. AVX2-only CPUs) bf16 matmuls are emulated and ~100x slower: measure them small.
    peaks = {
        "fp32": matmul_peak(torch.float32),
        "bf16": matmul_peak(torch.bfloat16, *((2048, 5) if native_bf16 else (256, 1))),
    }
    spec = ModelSpec(base_dir=args.base, num_layers=args.layers, finetune=args.finetune)
    dtype = torch.bfloat16 if bf16 and args.finetune == "lora" else torch.float32
    lm, tokenizer = build_trainable(spec, dtype, seed=0)
    lm.train()
    state_id, action_id = placeholder_ids(tokenizer)
    decoder_params = sum(p.numel() for n, p in backbone_of(lm).named_parameters() if "embed_tokens" not in n)
    head_params = lm.get_output_embeddings().weight.numel()
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-5)
    rng = np.random.default_rng(0)
    times, flops, positions = [], [], []
    for step in range(args.steps + 1):
        text_targets = 20 if step % 4 == 0 else 0
        batch = synthetic_batch(args.batch, args.length, state_id, action_id, text_targets, len(tokenizer) - 2, rng)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = compute_losses(lm, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            continue  # warm-up
        times.append(time.perf_counter() - start)
        forward = 2 * decoder_params * args.batch * args.length + 2 * head_params * args.batch * text_targets
        flops.append(forward * (2 if args.finetune == "lora" else 3))
        positions.append(args.batch * args.length)
    seconds = sum(times)
    achieved = sum(flops) / seconds / 1e9
    peak = peaks["bf16" if bf16 else "fp32"]
    print(f"threads {torch.get_num_threads()}, CPU bf16 native: {native_bf16}")
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print(
        f"{args.finetune}, {lm.config.num_hidden_layers} layers, {'bf16' if bf16 else 'fp32'}, "
        f"batch {args.batch} x {args.length}: step median {statistics.median(times):.3f} s"
    )
    print(f"samples/s {args.batch * len(times) / seconds:.2f}   positions/s {sum(positions) / seconds:.0f}")
    print(f"model GFLOP/s {achieved:.1f} = {100 * achieved / peak:.0f} % of the {'bf16' if bf16 else 'fp32'} peak")
    if not bf16:
        how = "" if native_bf16 else " by emulation"
        print(f"  ({achieved / peaks['bf16']:.0f}x the bf16 matmul rate this CPU reaches{how})")


if __name__ == "__main__":
    main()
