"""Where the LLM runs and in which precision: shared by `ground`, `imagine` and the benchmarks."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when present, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("llm.device: cuda requested but no CUDA device is available")
    return device


def resolve_bf16(precision: str, device: str) -> bool:
    """bf16 autocast when asked, or (auto) where the device computes bf16 natively."""
    if precision != "auto":
        return precision == "bf16"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # AVX-512 BF16 / AMX; emulated (slow) otherwise
