"""Which floating-point precision the model runs in: chosen here and nowhere else.

Why bf16 where the hardware has it: steering and effect measurement are matmul-bound, and a CPU
with AMX-BF16 or AVX512-BF16 (or a CUDA GPU with bf16) multiplies bf16 2–8× faster than fp32
(measured in docs/design.md §Precision), for a per-token KL to the fp32 model of about 0.002
nats. Elsewhere bf16 is emulated and slower, so fp32 is kept. ``STEERING_PRECISION=fp32`` (or
``bf16``) overrides the choice, e.g. to reproduce a result made on other hardware; what was used
is recorded with every pack (``meta.precision``).

The device is chosen here too (:func:`resolve_device`): ``"auto"`` takes the first CUDA GPU when
PyTorch sees one and the CPU otherwise; ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` say which. A CUDA
device that does not exist is refused with one sentence before anything is loaded or written.
"""

from __future__ import annotations

import os
import re
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


class DeviceError(SteeringCoreError):
    """A device setting that names no device PyTorch can use on this machine."""


#: What a device setting may say: auto, cpu, cuda or cuda:N.
_DEVICE_FORM = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def check_device_spec(spec: str | torch.device | None) -> str:
    """The device setting in its plain form (``auto``, ``cpu``, ``cuda``, ``cuda:N``); only its
    form is checked here, so a config written on a laptop for a GPU machine still loads."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if not _DEVICE_FORM.match(text):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index), not {str(spec)!r}.")
    return text


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` a setting names on this machine: ``auto`` → ``cuda:0`` when PyTorch sees
    a CUDA GPU, else ``cpu``; ``cuda``/``cuda:N`` must exist (one sentence otherwise)."""
    text = check_device_spec(spec)
    if text == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if text == "auto":
        return torch.device("cuda:0") if available else torch.device("cpu")
    index = int(text.split(":", 1)[1]) if ":" in text else 0
    if not available:
        raise DeviceError(f"device = {text!r} asks for a CUDA GPU, but PyTorch sees none on this machine "
                          "(torch.cuda.is_available() is false); use device = \"cpu\" or \"auto\".")
    count = torch.cuda.device_count()
    if index >= count:
        have = "1 CUDA device (cuda:0)" if count == 1 else f"{count} CUDA devices (cuda:0 to cuda:{count - 1})"
        raise DeviceError(f"CUDA device cuda:{index} does not exist: this machine has {have}.")
    return torch.device(f"cuda:{index}")


def default_device() -> torch.device | None:
    """The device ``STEERING_DEVICE`` names for models loaded without one (None: leave them where
    the loader put them, the CPU). The app and the library stay on the CPU unless asked."""
    env = os.environ.get("STEERING_DEVICE", "").strip()
    return resolve_device(env) if env else None
