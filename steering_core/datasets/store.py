"""Saved datasets: the ``datasets`` and ``dataset_pairs`` tables of the user's library file.

A save is validated completely first and written in one transaction, so a failed save leaves
the store exactly as it was. The app reaches this store as ``Library.datasets``
(:mod:`steering_core.storage.library`), which shares one connection with the other stores of
``library.duckdb``; constructed on its own, it opens the file itself.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steering_core.datasets.examples import example_datasets, load_example
from steering_core.datasets.pairs import (
    MAX_DESCRIPTION_CHARS,
    MAX_SOURCE_CHARS,
    ContrastiveDataset,
    Pair,
    validate_name,
    validate_pairs,
)
from steering_core.errors import DatasetError
from steering_core.names import unencodable_at
from steering_core.storage.db import transaction
from steering_core.storage.library import LibraryTable, default_library_db


def _clean_note(value: Any, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"The dataset {what} must be text, not {type(value).__name__}.")
    if len(value) > limit:
        raise DatasetError(f"The dataset {what} is at most {limit:,} characters; this one has {len(value):,}.")
    if "\x00" in value:
        raise DatasetError(f"The dataset {what} contains a NUL character; remove it.")
    if unencodable_at(value) is not None:
        raise DatasetError(f"The dataset {what} contains a character that cannot be stored (an unpaired "
                           f"surrogate, at position {unencodable_at(value)}); remove it.")
    return value.strip()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class DatasetStore(LibraryTable):
    """Saved datasets in a DuckDB file (times in UTC). Safe to share between threads (one lock
    around the connection); one process at a time may hold the file (DuckDB's rule). Every
    write is validated first and runs in one transaction: a failed save changes nothing."""

    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS datasets (
            name TEXT PRIMARY KEY, description TEXT, source TEXT, n_pairs INTEGER,
            created TIMESTAMP, updated TIMESTAMP)""",
        "CREATE TABLE IF NOT EXISTS dataset_pairs (name TEXT, idx INTEGER, positive TEXT, negative TEXT, split TEXT)",
    )

    def __init__(self, path: str | Path | None = None, con=None, lock: threading.RLock | None = None):
        self.path = Path(path).expanduser() if path is not None else default_library_db()
        if self.path.name == "pack.duckdb":
            raise DatasetError("Datasets never go into a pack's pack.duckdb (packs are read-only); "
                               "choose another file.")
        super().__init__(self.path, con=con, lock=lock)

    def __contains__(self, name: object) -> bool:
        try:
            key = validate_name(name)
        except DatasetError:
            return False
        with self._lock:
            return self.con.execute("SELECT count(*) FROM datasets WHERE name = ?", [key]).fetchone()[0] > 0

    # -- reads ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Saved dataset names, sorted, for a picker."""
        with self._lock:
            return [r[0] for r in self.con.execute("SELECT name FROM datasets ORDER BY name").fetchall()]

    def summaries(self) -> list[dict[str, Any]]:
        """One row per saved dataset (name, description, source, n_pairs, n_heldout, created,
        updated) for the library table, without loading any pair texts."""
        with self._lock:
            cur = self.con.execute(
                """SELECT d.name, d.description, d.source, d.n_pairs, coalesce(h.n, 0) AS n_heldout,
                          d.created, d.updated
                   FROM datasets d
                   LEFT JOIN (SELECT name, count(*) AS n FROM dataset_pairs WHERE split = 'heldout'
                              GROUP BY name) h USING (name)
                   ORDER BY d.name""")
            cols = [c[0] for c in cur.description]
            rows = cur.fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def load(self, name: str) -> ContrastiveDataset:
        """A saved dataset with its pairs in saved order and their splits."""
        key = validate_name(name)
        with self._lock:
            meta = self.con.execute("SELECT description, source, n_pairs FROM datasets WHERE name = ?",
                                    [key]).fetchone()
            if meta is None:
                raise DatasetError(self._missing(key))
            rows = self.con.execute("SELECT positive, negative, split FROM dataset_pairs WHERE name = ? ORDER BY idx",
                                    [key]).fetchall()
        description, source, n_pairs = meta
        if n_pairs != len(rows):
            raise DatasetError(f"The saved dataset {key!r} is damaged ({n_pairs} pairs recorded, {len(rows)} found); "
                               "delete it and save it again.")
        return ContrastiveDataset(key, [Pair(p, n, s) for p, n, s in rows], description or "", source or "")

    # -- one chooser for every page: saved datasets, then the shipped examples -------------------
    SAVED, EXAMPLE = "saved: ", "example: "

    def choices(self) -> list[str]:
        """The labels a dataset selector offers: every saved dataset, then every shipped example
        (prefixed, because a saved dataset may share an example's name). :meth:`open_choice`
        reads them back, so pages never parse the labels themselves."""
        return [self.SAVED + n for n in self.names()] + [self.EXAMPLE + n for n in example_datasets()]

    def open_choice(self, choice: str) -> ContrastiveDataset:
        """The dataset a label of :meth:`choices` names."""
        if choice.startswith(self.SAVED):
            return self.load(choice[len(self.SAVED):])
        if choice.startswith(self.EXAMPLE):
            return load_example(choice[len(self.EXAMPLE):])
        raise DatasetError(f"{choice!r} names no dataset: expected {self.SAVED!r} or {self.EXAMPLE!r} and a name.")

    def _missing(self, key: str) -> str:
        have = self.names()
        listed = ", ".join(repr(n) for n in have[:10]) + (" …" if len(have) > 10 else "")
        return f"No saved dataset is named {key!r}; " + (f"saved: {listed}." if have else "none is saved yet.")

    # -- writes --------------------------------------------------------------------------------
    def save(self, ds: ContrastiveDataset, overwrite: bool = False) -> list[str]:
        """Save a dataset under its name and return validation warnings. The name, every pair
        and the notes are checked before anything is written, then one transaction replaces all
        rows; an existing name is refused unless ``overwrite`` (keeping its creation time)."""
        if not isinstance(ds, ContrastiveDataset):
            raise DatasetError(f"Save a ContrastiveDataset, not {type(ds).__name__}.")
        key = validate_name(ds.name)
        pairs, warnings = validate_pairs(ds.pairs)
        description = _clean_note(ds.description, "description", MAX_DESCRIPTION_CHARS)
        source = _clean_note(ds.source, "source", MAX_SOURCE_CHARS)
        now = _utcnow()
        with self._lock, transaction(self.con):
            same = [r[0] for r in self.con.execute("SELECT name FROM datasets WHERE lower(name) = lower(?)",
                                                   [key]).fetchall()]
            if clash := [n for n in same if n != key]:
                raise DatasetError(f"A dataset named {clash[0]!r} already exists; a name differing from it only "
                                   "in capitals would look like the same dataset in every picker, so choose "
                                   "another name (or overwrite that one under its own spelling).")
            exists = key in same
            if exists and not overwrite:
                raise DatasetError(f"A dataset named {key!r} already exists; choose another name or overwrite it.")
            self.con.execute("DELETE FROM dataset_pairs WHERE name = ?", [key])
            if exists:
                self.con.execute("UPDATE datasets SET description = ?, source = ?, n_pairs = ?, updated = ? "
                                 "WHERE name = ?", [description, source, len(pairs), now, key])
            else:
                self.con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
                                 [key, description, source, len(pairs), now, now])
            self.con.execute(
                "INSERT INTO dataset_pairs SELECT ?, unnest(?::INTEGER[]), unnest(?::TEXT[]), unnest(?::TEXT[]), "
                "unnest(?::TEXT[])",
                [key, list(range(len(pairs))), [p.positive for p in pairs], [p.negative for p in pairs],
                 [p.split for p in pairs]])
        return warnings

    def delete(self, name: str) -> None:
        """Remove a saved dataset and all its pairs (one transaction)."""
        key = validate_name(name)
        with self._lock, transaction(self.con):
            if self.con.execute("SELECT count(*) FROM datasets WHERE name = ?", [key]).fetchone()[0] == 0:
                raise DatasetError(self._missing(key))
            self.con.execute("DELETE FROM dataset_pairs WHERE name = ?", [key])
            self.con.execute("DELETE FROM datasets WHERE name = ?", [key])
