"""Every SQL statement the pack build runs, in one place: what each stage reads from and writes to
the build database, and the copy of the finished tables into a shipped ``pack.duckdb``.

The tables themselves (``meta``, ``features``, ``feature_effects``, … — a public contract that
users query directly) are created by :func:`steering_core.storage.db.ensure_schema`, which the
reader and the app share. Functions here never open a transaction of their own: each stage wraps
its writes together with its completion record in one :func:`~steering_core.storage.db.transaction`,
so a killed build leaves either the old rows or the new ones."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

from steering_core.storage.db import ensure_schema

#: The tables a shipped pack holds; the build-only ``stages`` and ``effect_chunks`` stay behind.
PACK_TABLES = ("meta", "features", "feature_snippets", "feature_effects", "feature_neighbors", "label_embeddings")

FEATURE_COLUMNS = ("feature_id", "label", "auto_label", "notes", "density", "mean_act", "max_act", "live",
                   "hist_counts", "hist_max", "top_tokens", "top_logits", "bottom_logits")
SNIPPET_COLUMNS = ("feature_id", "kind", "rank", "max_act", "tokens", "acts")
EMBEDDING_COLUMNS = ("feature_id", "embedding")
EFFECT_COLUMNS = ("source_feature", "target_feature", "effect", "rel_effect", "rank")
NEIGHBOR_COLUMNS = ("kind", "feature_id", "other_id", "value", "rank")


def insert_rows(con: Any, table: str, rows: Sequence[tuple], cols: Sequence[str]) -> None:
    """Bulk insert through a DataFrame (``executemany`` is slow for 10⁵ rows)."""
    if not rows:
        return
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(cols))
    con.register("_bulk", df)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _bulk")
    finally:
        con.unregister("_bulk")


# -- reads -----------------------------------------------------------------------------------------


def done_stages(con: Any) -> list[str]:
    return [r[0] for r in con.execute("SELECT stage FROM stages").fetchall()]


def live_feature_ids(con: Any) -> list[int]:
    return [r[0] for r in con.execute("SELECT feature_id FROM features WHERE live ORDER BY feature_id").fetchall()]


def done_effect_chunks(con: Any) -> set[int]:
    return {r[0] for r in con.execute("SELECT chunk FROM effect_chunks").fetchall()}


def measured_sparse_features(con: Any, dense_threshold: float) -> list[tuple[int, float]]:
    """``(feature_id, alpha)`` of every measured feature that fires on at most ``dense_threshold``
    of tokens, by id (the stability stage draws from these)."""
    return con.execute("SELECT feature_id, alpha FROM features WHERE measured AND density <= ? "
                       "ORDER BY feature_id", [dense_threshold]).fetchall()


# -- writes, one function per stage ----------------------------------------------------------------


def replace_features(con: Any, features: Sequence[tuple], snippets: Sequence[tuple],
                     embeddings: Sequence[tuple]) -> None:
    """The stats stage: every feature's card row, its snippets and its label embedding."""
    con.execute("DELETE FROM features")
    con.execute("DELETE FROM feature_snippets")
    con.execute("DELETE FROM label_embeddings")
    placeholders = ", ".join("?" for _ in FEATURE_COLUMNS)
    con.executemany(f"INSERT INTO features ({', '.join(FEATURE_COLUMNS)}) VALUES ({placeholders})", list(features))
    insert_rows(con, "feature_snippets", snippets, SNIPPET_COLUMNS)
    insert_rows(con, "label_embeddings", embeddings, EMBEDDING_COLUMNS)


def set_baseline(con: Any, baseline: Sequence[float]) -> None:
    """Each feature's mean activation in the unsteered rollouts (feature i gets ``baseline[i]``)."""
    con.execute("UPDATE features SET baseline_act = v FROM (SELECT unnest(range(?)) AS i, unnest(?) AS v) "
                "AS b WHERE feature_id = b.i", [len(baseline), list(baseline)])


def write_effect_chunk(con: Any, chunk: int, ids: Sequence[int], effects: Sequence[tuple],
                       alphas: Sequence[float], dces: Sequence[float]) -> None:
    """One chunk of the effects stage: its features' top effects, their α and ΔCE, and the chunk's
    completion record (committed together, so a resumed build redoes exactly the missing chunks)."""
    ids = [int(i) for i in ids]
    con.execute("DELETE FROM feature_effects WHERE source_feature IN (SELECT unnest(?))", [ids])
    insert_rows(con, "feature_effects", effects, EFFECT_COLUMNS)
    con.executemany("UPDATE features SET alpha = ?, alpha_dce = ?, measured = true WHERE feature_id = ?",
                    [(float(a), float(d), f) for a, d, f in zip(alphas, dces, ids)])
    con.execute("INSERT OR REPLACE INTO effect_chunks VALUES (?, ?)", [chunk, len(ids)])


def replace_neighbors(con: Any, rows: Sequence[tuple]) -> None:
    con.execute("DELETE FROM feature_neighbors")
    insert_rows(con, "feature_neighbors", rows, NEIGHBOR_COLUMNS)


def set_map_coordinates(con: Any, rows: Sequence[tuple]) -> None:
    """Rows of ``(dec_x, dec_y, eff_x, eff_y, cluster, feature_id)``."""
    con.executemany("UPDATE features SET dec_x = ?, dec_y = ?, eff_x = ?, eff_y = ?, cluster = ? "
                    "WHERE feature_id = ?", list(rows))


# -- ship ------------------------------------------------------------------------------------------


def copy_into_pack(con: Any, db: Path) -> None:
    """Copy the finished tables of the build database (attached as ``build``) into a fresh
    ``pack.duckdb`` at ``db``, stamped with the build date and without the build-only tables."""
    path = str(db).replace("'", "''")
    con.execute(f"ATTACH '{path}' AS shipped")
    try:
        con.execute("USE shipped")
        ensure_schema(con)
        con.execute("USE build")
        for t in PACK_TABLES:
            con.execute(f"INSERT INTO shipped.{t} SELECT * FROM build.main.{t}")
        con.execute("INSERT OR REPLACE INTO shipped.meta VALUES ('build_date', ?)",
                    [_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")])
        con.execute("DROP TABLE shipped.effect_chunks")
        con.execute("DROP TABLE shipped.stages")
    finally:
        con.execute("USE build")
        con.execute("DETACH shipped")
