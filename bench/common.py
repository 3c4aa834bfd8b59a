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


def open_measured_pack(pack_dir, precision: str | None = None):
    """A shipped pack with what re-measuring its features needs: ``(pack, spec, model, sae, layer)``,
    the rollout settings it was built with and its model (in ``precision``, default the pack's)."""
    from steering_core.measure.vector_effects import effect_spec_of
    from steering_core.model.loading import load_model
    from steering_core.model.saes import load_sae_from_disk
    from steering_core.pack.reader import FeaturePack

    pack = FeaturePack(pack_dir)
    model = load_model(pack.meta_json("config", {}).get("model", "embedded"),
                       precision=precision or pack.meta.get("precision"))
    return pack, effect_spec_of(pack), model, load_sae_from_disk(pack.sae_dir, model), int(pack.meta["layer"])
