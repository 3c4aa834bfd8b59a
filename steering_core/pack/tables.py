"""Every SQL statement the pack build runs, in one place: what each stage reads from and writes to
the build database, and the copy of the finished tables into a shipped ``pack.duckdb``.

The tables themselves are declared here too (:data:`SCHEMA`, created by :func:`ensure_schema`,
which the reader, the app's tests and the benchmarks share); the names ``meta``, ``features`` and
``feature_effects`` are a public contract that users query directly (docs/design.md §Storage contract). Functions here never open a transaction of their own: each stage wraps
its writes together with its completion record in one :func:`~steering_core.storage.db.transaction`,
so a killed build leaves either the old rows or the new ones."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

#: Every table of a pack's build database, created on open (a resumed build keeps what it has).
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
        source_feature INTEGER, target_feature INTEGER, effect DOUBLE, rel_effect DOUBLE, rank INTEGER,
        effect_se DOUBLE, specific DOUBLE, specific_se DOUBLE, rank_specific INTEGER)""",
    """CREATE TABLE IF NOT EXISTS generic_response (
        target_feature INTEGER PRIMARY KEY, generic DOUBLE, generic_se DOUBLE, hub_share DOUBLE, hub BOOLEAN)""",
    """CREATE TABLE IF NOT EXISTS feature_neighbors (
        kind TEXT, feature_id INTEGER, other_id INTEGER, value DOUBLE, rank INTEGER)""",
    "CREATE TABLE IF NOT EXISTS label_embeddings (feature_id INTEGER PRIMARY KEY, embedding FLOAT[])",
    "CREATE TABLE IF NOT EXISTS effect_chunks (chunk INTEGER PRIMARY KEY, n INTEGER)",
    "CREATE TABLE IF NOT EXISTS topup_chunks (chunk INTEGER PRIMARY KEY, n INTEGER)",
    """CREATE TABLE IF NOT EXISTS feature_outputs (
        feature_id INTEGER PRIMARY KEY, gains VARCHAR[], gain_values DOUBLE[], losses VARCHAR[],
        loss_values DOUBLE[], output_score DOUBLE)""",
    # columns added after the first packs shipped: a build database from before gains them on open
    "ALTER TABLE feature_neighbors ADD COLUMN IF NOT EXISTS se DOUBLE",
    "ALTER TABLE features ADD COLUMN IF NOT EXISTS description TEXT",
    "ALTER TABLE features ADD COLUMN IF NOT EXISTS context_words VARCHAR[]",
    "ALTER TABLE features ADD COLUMN IF NOT EXISTS token_change TEXT",
    "ALTER TABLE features ADD COLUMN IF NOT EXISTS output_score DOUBLE",
    "ALTER TABLE feature_snippets ADD COLUMN IF NOT EXISTS n_similar INTEGER DEFAULT 1",
    "ALTER TABLE features ADD COLUMN IF NOT EXISTS sink_share DOUBLE",
]



def ensure_schema(con) -> None:
    """Create the pack tables that do not exist yet (a resumed build keeps what it has)."""
    for stmt in SCHEMA:
        con.execute(stmt)



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


#: The tables a shipped pack holds; the build-only ``stages`` and chunk records stay behind.
PACK_TABLES = ("meta", "features", "feature_snippets", "feature_effects", "feature_neighbors", "label_embeddings",
               "generic_response", "feature_outputs")

FEATURE_COLUMNS = ("feature_id", "label", "auto_label", "notes", "density", "mean_act", "max_act", "live",
                   "hist_counts", "hist_max", "top_tokens", "top_logits", "bottom_logits", "description",
                   "context_words")
SNIPPET_COLUMNS = ("feature_id", "kind", "rank", "max_act", "tokens", "acts", "n_similar")
EMBEDDING_COLUMNS = ("feature_id", "embedding")
EFFECT_COLUMNS = ("source_feature", "target_feature", "effect", "rel_effect", "rank", "effect_se", "specific",
                  "specific_se", "rank_specific")
GENERIC_COLUMNS = ("target_feature", "generic", "generic_se", "hub_share", "hub")
OUTPUT_COLUMNS = ("feature_id", "gains", "gain_values", "losses", "loss_values", "output_score")
NEIGHBOR_COLUMNS = ("kind", "feature_id", "other_id", "value", "rank", "se")


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


def done_topup_chunks(con: Any) -> set[int]:
    return {r[0] for r in con.execute("SELECT chunk FROM topup_chunks").fetchall()}


def feature_alphas(con: Any, ids: Sequence[int]) -> list[float]:
    """The loss-matched α the effects stage stored for each of ``ids``, in that order."""
    got = dict(con.execute("SELECT feature_id, alpha FROM features WHERE feature_id IN (SELECT unnest(?))",
                           [[int(i) for i in ids]]).fetchall())
    return [float(got[int(i)]) for i in ids]


def measured_sparse_features(con: Any, dense_threshold: float) -> list[tuple[int, float]]:
    """``(feature_id, alpha)`` of every measured feature that fires on at most ``dense_threshold``
    of tokens, by id (the stability stage draws from these)."""
    return con.execute("SELECT feature_id, alpha FROM features WHERE measured AND density <= ? "
                       "ORDER BY feature_id", [dense_threshold]).fetchall()


# -- writes, one function per stage ----------------------------------------------------------------


def replace_features(con: Any, features: Sequence[tuple], snippets: Sequence[tuple],
                     embeddings: Sequence[tuple]) -> None:
    """The stats stage: every feature's card row, its snippets and its label embedding. A feature
    row that exists keeps the columns other stages wrote (α, effects flags, map coordinates), so
    the corpus statistics can be rebuilt after the effects without measuring them again."""
    con.execute("DELETE FROM feature_snippets")
    con.execute("DELETE FROM label_embeddings")
    placeholders = ", ".join("?" for _ in FEATURE_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in FEATURE_COLUMNS[1:])
    con.executemany(f"INSERT INTO features ({', '.join(FEATURE_COLUMNS)}) VALUES ({placeholders}) "
                    f"ON CONFLICT (feature_id) DO UPDATE SET {updates}", list(features))
    con.execute(f"DELETE FROM features WHERE feature_id >= {len(features)}")
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


def replace_effect_rows(con: Any, ids: Sequence[int], effects: Sequence[tuple]) -> None:
    """The stored effects of sources ``ids``, replaced by ``effects`` (a top-up, or its reset)."""
    con.execute("DELETE FROM feature_effects WHERE source_feature IN (SELECT unnest(?))", [[int(i) for i in ids]])
    insert_rows(con, "feature_effects", effects, EFFECT_COLUMNS)


def write_topup_chunk(con: Any, chunk: int, ids: Sequence[int], effects: Sequence[tuple]) -> None:
    """One chunk of the top-up stage: its features' pooled top effects replace their first ones,
    with the chunk's completion record (committed together, as :func:`write_effect_chunk`)."""
    replace_effect_rows(con, ids, effects)
    con.execute("INSERT OR REPLACE INTO topup_chunks VALUES (?, ?)", [chunk, len(ids)])


def replace_generic(con: Any, rows: Sequence[tuple]) -> None:
    """The control stage: per target, the generic response, its SE, hub share and hub flag."""
    con.execute("DELETE FROM generic_response")
    insert_rows(con, "generic_response", rows, GENERIC_COLUMNS)


def replace_outputs(con: Any, rows: Sequence[tuple]) -> None:
    """The outputs stage: per feature, its TokenChange lists and output score, also on the feature's
    row (``token_change`` as JSON ``{"gains": [[token, Δp], …], "losses": …}``, ``output_score``)."""
    con.execute("DELETE FROM feature_outputs")
    insert_rows(con, "feature_outputs", rows, OUTPUT_COLUMNS)
    con.execute("UPDATE features SET token_change = NULL, output_score = NULL")
    con.executemany("UPDATE features SET token_change = ?, output_score = ? WHERE feature_id = ?",
                    [(json.dumps({"gains": [[t, round(float(v), 6)] for t, v in zip(g, gv)],
                                  "losses": [[t, round(float(v), 6)] for t, v in zip(lo, lv)]}), float(sc), int(f))
                     for f, g, gv, lo, lv, sc in rows])


def set_labels(con: Any, rows: Sequence[tuple], embeddings: Sequence[tuple]) -> None:
    """The labels stage: ``(label, description, feature_id)`` rows (label = auto_label) and the
    embeddings semantic search reads (of the description)."""
    con.executemany("UPDATE features SET label = ?, auto_label = ?, description = ? WHERE feature_id = ?",
                    [(lab, lab, d, f) for lab, d, f in rows])
    con.execute("DELETE FROM label_embeddings")
    insert_rows(con, "label_embeddings", embeddings, EMBEDDING_COLUMNS)


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
            cols = ", ".join(r[0] for r in con.execute(f"DESCRIBE build.main.{t}").fetchall())
            con.execute(f"INSERT INTO shipped.{t} ({cols}) SELECT {cols} FROM build.main.{t}")
        con.execute("INSERT OR REPLACE INTO shipped.meta VALUES ('build_date', ?)",
                    [_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")])
        con.execute("DROP TABLE shipped.effect_chunks")
        con.execute("DROP TABLE shipped.topup_chunks")
        con.execute("DROP TABLE shipped.stages")
    finally:
        con.execute("USE build")
        con.execute("DETACH shipped")
