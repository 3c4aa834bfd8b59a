"""The pack command line, ``python -m steering_core.pack`` or ``steering-pack``: build or
resume a pack from its TOML config, or show how far a (background) build has come.

    python -m steering_core.pack build packs/embedded.toml      # run or resume
    python -m steering_core.pack status packs/embedded.toml     # what is done, last log lines
    python -m steering_core.pack save-progress packs/embedded.toml   # copy progress to commit (stopped build)
    python -m steering_core.pack reference packs/embedded.toml --features 12   # re-score, re-ship
    python -m steering_core.pack build CONFIG --device cuda:1                # on one GPU
    python -m steering_core.pack build CONFIG --ray local:4                  # 4 Ray workers here
    python -m steering_core.pack build CONFIG --ray local:2 --ray-threads 1  # 2 cores: 1.8x one process
    python -m steering_core.pack build CONFIG --ray ray://head:10001         # on a Ray cluster

Every failure a person can fix ends in one sentence on stderr: exit 2 for a bad config or input
(a CUDA device that does not exist, an unreachable Ray cluster, an SAE that does not fit the model:
refused before anything is written), 3 for a full disk or a failed database write (finished work is
kept; rerun to resume)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from steering_core.errors import SteeringCoreError
from steering_core.model.loading import load_model
from steering_core.model.precision import resolve_device
from steering_core.pack import tables
from steering_core.pack.builder import Builder, check_inputs
from steering_core.pack.config import PackConfig, PackConfigError, check_values, load_config
from steering_core.pack.distributed.executor import LocalExecutor, executor_for
from steering_core.pack.pipeline import PIPELINE
from steering_core.storage.db import StoreError, connect


def status(cfg: PackConfig) -> dict[str, Any]:
    """Which stages are done and the tail of the build log (for a background build)."""
    d = cfg.workdir
    out: dict[str, Any] = {"workdir": str(d), "done": [], "log_tail": []}
    if (d / "build.duckdb").exists():
        try:
            con = connect(d / "build.duckdb", read_only=True)
            try:
                out["done"] = tables.done_stages(con)
            finally:
                con.close()
        except StoreError as exc:
            out["done"] = [f"(the build database cannot be read now: {exc})"]  # a running build holds it; or damaged
    if (d / "build.log").exists():
        out["log_tail"] = (d / "build.log").read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
    return out


def _quiet_libraries() -> None:
    """``--quiet`` means no bars at all: the model loader's and the hub's are silenced too (their
    "Loading weights" bars otherwise land in a background build's log on every start)."""
    import huggingface_hub.utils
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m steering_core.pack", description=(
        f"Build a feature pack ({' → '.join(PIPELINE.order())}) from a TOML config; "
        "the same command resumes after a kill at any point."))
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or resume a pack")
    b.add_argument("config")
    b.add_argument("--until", choices=PIPELINE.order(), help="stop after this stage")
    b.add_argument("--quiet", action="store_true", help="no progress bars (log file only)")
    _where(b)
    s = sub.add_parser("status", help="stages done and the last log lines")
    s.add_argument("config")
    r = sub.add_parser("reference", help="(re)measure the shipped reference: random features at the paper's budget")
    r.add_argument("config")
    r.add_argument("--features", type=int, default=None, help="how many random non-dense features (default: config)")
    r.add_argument("--quiet", action="store_true", help="no progress bars (log file only)")
    _where(r)
    d = sub.add_parser("redo", help="forget stages (and their cached files) so the next build runs them again; "
                                    "stages that need them are kept unless named too")
    d.add_argument("config")
    d.add_argument("stages", nargs="+", choices=PIPELINE.order())
    p = sub.add_parser("save-progress", help="copy the build's corpus-independent progress (α windows, twin rows, "
                                             "control, effects and top-up chunks) into the config's progress folder")
    p.add_argument("config")
    lb = sub.add_parser("relabel", help="rewrite the labels, descriptions and search embeddings of a finished pack "
                                        "from what it stores (no model; all or nothing)")
    lb.add_argument("pack", help="a pack folder (e.g. cache/pack) or its pack.duckdb")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.cmd == "relabel":
            return _relabel(args.pack)
        cfg = load_config(args.config)
        if args.cmd == "status":
            print(json.dumps(status(cfg), indent=1))
            return 0
        if args.cmd == "redo":
            if not (cfg.workdir / "build.duckdb").exists():
                raise PackConfigError(f"There is no build in {cfg.workdir} to redo stages of; `build` runs them all.")
            b = Builder(cfg, show_bar=False, model=None, executor=LocalExecutor())
            b.redo(*args.stages)
            b.close()
            print(f"forgot {', '.join(args.stages)}; run `build` to compute them again")
            return 0
        if args.cmd == "save-progress":
            return _save_progress(cfg)
        if args.cmd == "reference" and args.features is not None:
            if args.features < 1:
                raise SteeringCoreError(f"--features must be at least 1, not {args.features}.")
            cfg.reference.features = args.features
        _override(cfg, args)
        if getattr(args, "quiet", False):
            _quiet_libraries()
        # Refused before anything is written, cheapest first: a CUDA device that does not exist, an
        # unreachable Ray cluster, a model that cannot load, a hook or SAE that does not fit it.
        resolve_device(cfg.device)
        executor = executor_for(cfg)
        try:
            model = _load_model(cfg)
            check_inputs(cfg, model)
            builder = Builder(cfg, show_bar=not args.quiet, model=model, executor=executor)
            if args.cmd == "reference":
                builder.redo("reference", "ship")
            builder.run(getattr(args, "until", None))
        finally:
            executor.close()
    except SteeringCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == 28:
            print(f"error: the disk is full ({exc}); finished stages are kept, rerun the same command to resume.",
                  file=sys.stderr)
            return 3
        raise
    except Exception as exc:
        import duckdb

        if isinstance(exc, duckdb.Error):
            print(f"error: a database write failed ({str(exc).splitlines()[0]}); the transaction was rolled back, "
                  "finished work is kept, rerun the same command to resume.", file=sys.stderr)
            return 3
        raise
    return 0


def _relabel(where: str) -> int:
    """Relabel a copy of the pack database and move it over the original only when finished, so a
    kill or a failure leaves the pack as it was."""
    import shutil
    from pathlib import Path

    from steering_core.pack.describe_stages import relabel

    path = Path(where)
    path = path / "pack.duckdb" if path.is_dir() else path
    if not path.is_file():
        raise StoreError(f"There is no pack database at {path}.")
    try:  # checked on the original, read-only, before anything is copied next to it
        con = connect(path, read_only=True)
    except StoreError as exc:
        raise StoreError(f"{path} is not a pack database ({str(exc).split(';')[0]}).") from None
    try:
        have = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    finally:
        con.close()
    if not {"features", "feature_outputs", "label_embeddings", "meta"} <= have:
        raise StoreError(f"{path} is not a finished pack (it has no output descriptions to label from).")
    tmp = path.with_name(path.name + ".relabel.tmp")
    packed = path.with_name(path.name + ".packed.tmp")
    packed.unlink(missing_ok=True)
    shutil.copy2(path, tmp)
    try:
        con = connect(tmp)
        try:
            n = relabel(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        _compact(tmp, packed)
        os.replace(packed, path)
    finally:
        tmp.unlink(missing_ok=True)
        packed.unlink(missing_ok=True)
    print(f"relabelled {n} features in {path}")
    return 0


def _compact(src, dst) -> None:
    """Copy a DuckDB database into a fresh file: updated rows leave their old blocks behind, and a
    relabelled 29 MB pack grew to 35 MB, past the repository's budget for the shipped pack."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("ATTACH ? AS src (READ_ONLY)", [str(src)])
        con.execute("ATTACH ? AS dst", [str(dst)])
        con.execute("COPY FROM DATABASE src TO dst")
    finally:
        con.close()


def _save_progress(cfg: PackConfig) -> int:
    """Run by hand once a build is stopped (a running build holds its database and saves by itself)."""
    from steering_core.pack.carry import save_progress

    if not cfg.progress:
        raise PackConfigError("This config has no progress folder; set progress = \"packs/progress/NAME\".")
    if not (cfg.workdir / "build.duckdb").exists():
        raise PackConfigError(f"There is no build in {cfg.workdir} to save progress from.")
    b = Builder(cfg, show_bar=False, model=None, executor=LocalExecutor())
    try:
        n = save_progress(b)
    finally:
        b.close()
    print(f"saved {n} new effects chunks to {cfg.progress}")
    return 0


def _load_model(cfg: PackConfig):
    """The config's model on the config's device (on the CPU the loader is called as it always was)."""
    dev = resolve_device(cfg.device)
    if dev.type == "cpu" and not os.environ.get("STEERING_DEVICE"):
        return load_model(cfg.model, precision=cfg.precision)
    return load_model(cfg.model, precision=cfg.precision, device=dev)


def _where(p: argparse.ArgumentParser) -> None:
    """The options that say where a build runs (each overrides its config key)."""
    p.add_argument("--device", help="auto (a CUDA GPU when present), cpu, cuda or cuda:N (config: device)")
    p.add_argument("--ray", help="run the effect stages on Ray: auto, local:N, ray://host:port or host:port; "
                                 "'' for this process (config: ray)")
    p.add_argument("--ray-actors", type=int, help="Ray workers (default: one per GPU, or per CPU; config: ray_actors)")
    p.add_argument("--ray-threads", type=int, help="torch threads per Ray worker (default: the driver's; on a small "
                                                   "CPU, local:N with 1 thread each beats one N-thread process; "
                                                   "config: ray_threads)")


def _override(cfg: PackConfig, args: argparse.Namespace) -> None:
    if getattr(args, "device", None) is not None:
        cfg.device = args.device
    if getattr(args, "ray", None) is not None:
        cfg.ray = args.ray.strip()
    if getattr(args, "ray_actors", None) is not None:
        if args.ray_actors < 0:
            raise PackConfigError(f"--ray-actors cannot be negative, not {args.ray_actors}.")
        cfg.ray_actors = args.ray_actors
    if getattr(args, "ray_threads", None) is not None:
        if args.ray_threads < 0:
            raise PackConfigError(f"--ray-threads cannot be negative, not {args.ray_threads}.")
        cfg.ray_threads = args.ray_threads
    check_values(cfg)


if __name__ == "__main__":
    sys.exit(main())
