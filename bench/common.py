"""Helpers shared by the benchmarks: JSON-line output and the SAE-TS prompt set."""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Callable

#: The short open prompts of document 001 §3 (SAE-TS effects measurement).
SAETS_PROMPTS = [
    "I think", "Breaking news", "Last night", "For sale", "The weather", "Dear Sir/Madam",
    "Preheat the oven", "It's interesting that", "Assistant:", "I went up to", "New study suggests",
    "Once upon a time", "My favorite", "In the beginning",
]


def emit(metric: str, value: float, unit: str, **extra) -> None:
    """Print one benchmark result as a JSON line (the format every bench/ script uses)."""
    row = {"metric": metric, "value": round(float(value), 4), "unit": unit, **extra}
    print(json.dumps(row), flush=True)


def timed_median(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
