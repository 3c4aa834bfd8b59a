"""Helpers shared by the benchmarks: JSON-line output and the SAE-TS prompt set."""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Callable

from steering_core.measure.effects import SAETS_PROMPTS  # noqa: F401,E402  (re-exported for benches)


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
