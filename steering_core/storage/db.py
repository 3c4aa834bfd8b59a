"""DuckDB plumbing: opening a file with errors a person can act on, all-or-nothing transactions,
and the pack schema (docs/design.md §Storage contract). The table names ``meta``, ``features`` and
``feature_effects`` are a public contract: users query them directly. Every write goes through
:func:`transaction`, so a killed process leaves either the old rows or the new ones. The user's
own library file is :mod:`steering_core.storage.library`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from steering_core.errors import SteeringCoreError


class StoreError(SteeringCoreError):
    """A pack or cache database that cannot be opened or written safely."""


SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS stages (stage TEXT PRIMARY KEY, finished_at TIMESTAMP DEFAULT current_timestamp, info TEXT)",
    """CREATE TABLE IF NOT EXISTS features (
        feature_id INTEGER PRIMARY KEY, label TEXT, auto_label TEXT, notes TEXT,
        density DOUBLE, mean_act DOUBLE, max_act DOUBLE, live BOOLEAN,
        hist_counts INTEGER[], hist_max DOUBLE,
        top_tokens VARCHAR[], top_logits VARCHAR[], bottom_logits VARCHAR[],
        baseline_act DOUBLE, alpha DOUBLE, alpha_dce DOUBLE, measured BOOLEAN DEFAULT false,
        dec_x DOUBLE, dec_y DOUBLE, eff_x DOUBLE, eff_y DOUBLE, cluster INTEGER)""",
    """CREATE TABLE IF NOT EXISTS feature_snippets (
        feature_id INTEGER, kind TEXT, rank INTEGER, max_act DOUBLE, tokens VARCHAR[], acts FLOAT[])""",
    """CREATE TABLE IF NOT EXISTS feature_effects (
        source_feature INTEGER, target_feature INTEGER, effect DOUBLE, rel_effect DOUBLE, rank INTEGER)""",
    """CREATE TABLE IF NOT EXISTS feature_neighbors (
        kind TEXT, feature_id INTEGER, other_id INTEGER, value DOUBLE, rank INTEGER)""",
    "CREATE TABLE IF NOT EXISTS label_embeddings (feature_id INTEGER PRIMARY KEY, embedding FLOAT[])",
    "CREATE TABLE IF NOT EXISTS effect_chunks (chunk INTEGER PRIMARY KEY, n INTEGER)",
]


def connect(path: str | Path, read_only: bool = False):
    """Open a DuckDB file with messages a person can act on (locked by another process, not a
    DuckDB file, unreadable) instead of raw driver errors."""
    import duckdb

    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"No pack database at {path}.")
    if path.exists() and path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            head = fh.read(16)
        if len(head) < 12 or head[8:12] != b"DUCK":
            raise StoreError(f"{path} is not a DuckDB database (corrupted or a different file); "
                             "move it away and rebuild.")
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the folder {path.parent} ({exc.strerror}).") from None
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        msg = str(exc)
        if "lock" in msg.lower():
            raise StoreError(f"{path} is open in another process (a running build or app); "
                             "stop it or wait for it to finish.") from exc
        raise StoreError(f"Cannot open {path}: {msg.splitlines()[0]}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"{path} cannot be read as a DuckDB database ({str(exc).splitlines()[0]}); "
                         "move it away and rebuild.") from exc
    return con


def ensure_schema(con) -> None:
    """Create the pack tables that do not exist yet (a resumed build keeps what it has)."""
    for stmt in SCHEMA:
        con.execute(stmt)


@contextlib.contextmanager
def transaction(con) -> Iterator[Any]:
    """BEGIN … COMMIT, or ROLLBACK on any exception (disk full included): all or nothing."""
    import duckdb

    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    else:
        try:
            con.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise StoreError(f"Could not commit to the database ({str(exc).splitlines()[0]}); nothing was written.") from exc


def set_meta(con, items: dict[str, Any]) -> None:
    """Store pack-level facts as text (JSON for anything that is not already a string)."""
    for k, v in items.items():
        val = v if isinstance(v, str) else json.dumps(v)
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [k, val])


def get_meta(con) -> dict[str, str]:
    """Every pack-level fact, as stored (text)."""
    return dict(con.execute("SELECT key, value FROM meta ORDER BY key").fetchall())


def stage_done(con, stage: str) -> bool:
    """Whether a build stage finished and committed, so a resumed build can skip it."""
    return con.execute("SELECT count(*) FROM stages WHERE stage = ?", [stage]).fetchone()[0] > 0


def mark_stage(con, stage: str, info: dict | None = None) -> None:
    """Record a finished build stage; call it inside the stage's own transaction."""
    con.execute("INSERT OR REPLACE INTO stages (stage, info) VALUES (?, ?)", [stage, json.dumps(info or {})])
