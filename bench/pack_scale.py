"""What running a pack build's effect stages on Ray costs: the tiny test pack (tests/packs_util.py's
config on the tiny random model) built through the command line in one process and with
``--ray local:2`` (a Ray instance with two workers, started and stopped by the build), then the two
build databases compared.

    python -m bench.pack_scale [--until STAGE] [--repeats 1]

Both builds continue from one shared prefix (corpus → statistics, built once and copied), so the
difference between them is only what Ray changes. Prints ``pack_build_local_s`` and
``pack_build_ray_s`` (prefix + the rest of the pipeline), ``ray_overhead_s`` (their difference:
starting Ray and its workers, each loading the model and SAE, and moving chunks through the object
store; the median over ``--repeats``), the effect stages' own seconds in each, and
``ray_tables_identical`` (1 when every table and array the effect stages wrote is the same, byte
for byte). On a 2-core machine the Ray build is not faster (two workers share the cores the single
process had); the number to read is the overhead, paid once per build.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import emit, log

ROOT = Path(__file__).resolve().parents[1]


def _packs_util():
    """The tests' tiny-pack helpers (one definition of the tiny config for tests and this bench)."""
    spec = importlib.util.spec_from_file_location("packs_util", ROOT / "tests" / "packs_util.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["packs_util"] = mod
    spec.loader.exec_module(mod)
    return mod


def _build(folder: Path, extra: list[str]) -> tuple[float, dict]:
    """Run (or continue) the tiny build in ``folder`` through the CLI: wall seconds and stage seconds."""
    cfg = _packs_util().write_config(folder)
    args = [sys.executable, "-m", "steering_core.pack", "build", str(cfg), "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    res = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"build {' '.join(extra)} failed:\n{res.stderr[-3000:]}")
    import duckdb

    con = duckdb.connect(str(folder / "build" / "build.duckdb"), read_only=True)
    seconds = {k: float(v) for k, v in con.execute("SELECT key, value FROM meta WHERE key LIKE 'seconds_%'").fetchall()}
    con.close()
    return wall, seconds


#: The stages whose chunks run on the executor.
EFFECT_STAGES = ("seconds_control", "seconds_effects", "seconds_stability", "seconds_reference")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--until", default=None, help="stop both builds after this stage (default: the whole pipeline)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="local and Ray builds of the rest, alternated")
    args = ap.parse_args()
    util = _packs_util()
    until = ["--until", args.until] if args.until else []
    with tempfile.TemporaryDirectory(prefix="bench_pack_scale_") as tmp:
        prefix = Path(tmp) / "prefix"
        prefix.mkdir()
        t_prefix, _ = _build(prefix, ["--until", "stats"])
        log(f"shared prefix (corpus → stats): {t_prefix:.1f} s")
        runs: dict[str, list] = {"local": [], "ray": []}
        same = 1
        for r in range(args.repeats):
            for name, extra in (("local", []), ("ray", ["--ray", f"local:{args.workers}"])):
                folder = Path(tmp) / f"{name}{r}"
                shutil.copytree(prefix / "build", folder / "build")
                runs[name].append(_build(folder, extra + until))
                log(f"{name} build of the rest: {runs[name][-1][0]:.1f} s")
            try:
                util.assert_same_build(Path(tmp) / f"local{r}" / "build", Path(tmp) / f"ray{r}" / "build")
            except AssertionError as exc:
                log(f"tables differ: {exc}")
                same = 0
    t_local = statistics.median(w for w, _ in runs["local"])
    t_ray = statistics.median(w for w, _ in runs["ray"])
    eff_local = statistics.median(sum(s.get(k, 0.0) for k in EFFECT_STAGES) for _, s in runs["local"])
    eff_ray = statistics.median(sum(s.get(k, 0.0) for k in EFFECT_STAGES) for _, s in runs["ray"])
    emit("pack_build_local_s", t_prefix + t_local, "s", until=args.until or "ship", prefix_s=round(t_prefix, 1))
    emit("pack_build_ray_s", t_prefix + t_ray, "s", workers=args.workers, until=args.until or "ship",
         prefix_s=round(t_prefix, 1))
    emit("ray_overhead_s", t_ray - t_local, "s", workers=args.workers, repeats=args.repeats,
         effect_stages_local_s=round(eff_local, 1), effect_stages_ray_s=round(eff_ray, 1))
    emit("ray_tables_identical", same, "bool")
    log(json.dumps({name: [s for _, s in rs] for name, rs in runs.items()}))


if __name__ == "__main__":
    main()
