"""Which floating-point precision the model runs in: chosen here and nowhere else.

Why bf16 where the hardware has it: steering and effect measurement are matmul-bound, and a CPU
with AMX-BF16 or AVX512-BF16 (or a CUDA GPU with bf16) multiplies bf16 2–8× faster than fp32
(measured in docs/design.md §Precision), for a per-token KL to the fp32 model of about 0.002
nats. Elsewhere bf16 is emulated and slower, so fp32 is kept. ``STEERING_PRECISION=fp32`` (or
``bf16``) overrides the choice, e.g. to reproduce a result made on other hardware; what was used
is recorded with every pack (``meta.precision``).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from steering_core.errors import SteeringCoreError

NAMES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 instruction sets this CPU reports (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(f for f in ("amx_bf16", "avx512_bf16") if f in flags)
    except OSError:
        pass
    return ()


def fast_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The precision to run a model in on ``device``: bf16 where the hardware computes it natively,
    fp32 otherwise, unless ``STEERING_PRECISION`` says which."""
    choice = os.environ.get("STEERING_PRECISION", "auto").strip().lower()
    if choice in NAMES:
        return NAMES[choice]
    if choice not in ("", "auto"):
        raise SteeringCoreError(f"STEERING_PRECISION must be auto, fp32 or bf16, got {choice!r}.")
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    if dev.type == "cpu":
        return torch.bfloat16 if cpu_bf16_flags() else torch.float32
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def resolve(precision: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """``"auto"``/None → :func:`fast_dtype`; ``"fp32"``/``"bf16"`` or a dtype → that dtype."""
    if isinstance(precision, torch.dtype):
        return precision
    if precision is None or str(precision).lower() == "auto":
        return fast_dtype(device)
    try:
        return NAMES[str(precision).lower()]
    except KeyError:
        raise SteeringCoreError(f"precision must be auto, fp32 or bf16, got {precision!r}.") from None
