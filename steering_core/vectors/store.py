"""The user's library of saved steering vectors: one safetensors file and one DuckDB row each.

Vectors live under ``<root>/vectors/<name>.<version>.safetensors`` with one row each in the
``vectors`` table of ``<root>/library.duckdb`` (other modules own other tables of that file).
A save is all or nothing: if the database write fails, the new file is removed and the previous
one is left in place, so no half-saved vector remains (see :class:`VectorStore`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from steering_core.errors import SteeringCoreError, VectorError
from steering_core.storage.crashpoints import crash_point
from steering_core.storage.files import file_mode
from steering_core.vectors.safetensors_format import from_safetensors_bytes, to_safetensors_bytes
from steering_core.vectors.uploads import check_file_size, first_line
from steering_core.vectors.vector import SteeringVector, clean_vector_name

_VECTORS_TABLE = """CREATE TABLE IF NOT EXISTS vectors (
    name TEXT PRIMARY KEY, method TEXT, layer INTEGER, dataset TEXT, model_id TEXT, norm DOUBLE,
    d_model INTEGER, operator TEXT, created TEXT, meta TEXT, file TEXT)"""
_REMEDY = "delete it first or save with overwrite=True"


class VectorStore:
    """Saved vectors: tensors in ``<root>/vectors/<name>.<version>.safetensors``, one row each in
    the ``vectors`` table of ``<root>/library.duckdb`` (``root`` defaults to ``cache_dir()``).

    Crash safety: each save writes a new file, then commits the row that points at it, then
    removes the file it replaced. A ``kill -9`` anywhere in between leaves the old vector whole
    (row and file) or the new one; the only leftover is a file no row points at, which the next
    open removes. The row is the truth; a file is never overwritten in place.

    DuckDB lets a process open a file once, so a caller holding a connection to
    ``library.duckdb`` (a :class:`~steering_core.storage.library.Library`) passes it as ``con``, with the lock that
    guards it as ``lock``; the store then never closes it. Only the ``vectors`` table is touched.
    Thread-safe: every method holds the lock around database and file work.
    """

    def __init__(self, root: str | os.PathLike | None = None, con=None, lock=None):
        from steering_core.model.loading import cache_dir
        from steering_core.storage.db import connect, transaction

        self._transaction = transaction
        self.root = Path(root).expanduser() if root is not None else cache_dir()
        self.folder = self.root / "vectors"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VectorError(f"Cannot create the vector folder {self.folder} ({exc.strerror}).") from None
        self._lock = lock if lock is not None else threading.RLock()
        self._owns_con = con is None
        self.con = con if con is not None else connect(self.root / "library.duckdb")
        try:
            with self._lock, transaction(self.con):
                self.con.execute(_VECTORS_TABLE)
            self._remove_orphans()
        except BaseException:
            if self._owns_con:
                self.con.close()
            raise

    def _remove_orphans(self) -> None:
        """Delete what an interrupted save or delete left behind: temporary files and files no
        row points at. Only on open, when this process holds the library file (DuckDB's lock)."""
        with self._lock:
            kept = {r[0] for r in self.con.execute("SELECT file FROM vectors").fetchall()}
            for p in self.folder.iterdir():
                stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
                if p.is_file() and (stale_tmp or (p.suffix == ".safetensors" and p.name not in kept)):
                    with contextlib.suppress(OSError):
                        p.unlink()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection if this store opened it (a shared one stays open)."""
        with self._lock:
            if self._owns_con:
                self.con.close()

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------------------
    def _path(self, file: str) -> Path:
        p = self.folder / file
        if p.parent != self.folder:  # cannot happen for a cleaned name; kept as a last guard
            raise VectorError(f"The file name {file!r} would leave the vector folder.")
        return p

    def _file_of(self, name: str) -> str | None:
        row = self.con.execute("SELECT file FROM vectors WHERE name = ?", [name]).fetchone()
        return None if row is None else row[0]

    def names(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.con.execute("SELECT name FROM vectors ORDER BY name").fetchall()]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._lock:
            return self.con.execute("SELECT count(*) FROM vectors WHERE name = ?", [name.strip()]).fetchone()[0] > 0

    def __len__(self) -> int:
        with self._lock:
            return int(self.con.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def summaries(self) -> list[dict[str, Any]]:
        """One dict per saved vector, for a table: name, method, layer, dataset, norm, created,
        plus operator, d_model and model_id."""
        with self._lock:
            rows = self.con.execute("SELECT name, method, layer, dataset, norm, created, operator, d_model, model_id "
                                    "FROM vectors ORDER BY name").fetchall()
        keys = ("name", "method", "layer", "dataset", "norm", "created", "operator", "d_model", "model_id")
        return [dict(zip(keys, r)) for r in rows]

    def load(self, name: str) -> SteeringVector:
        """The saved vector (its file is authoritative for the tensor and metadata)."""
        name = clean_vector_name(name)
        with self._lock:
            file = self._file_of(name)
            if file is None:
                raise VectorError(f"No saved vector named {name!r}.")
            try:
                data = self._path(file).read_bytes()
            except FileNotFoundError:
                raise VectorError(f"The file of saved vector {name!r} is missing from {self.folder}; delete the "
                                  "entry and save the vector again.") from None
            except OSError as exc:
                raise VectorError(f"Cannot read the file of saved vector {name!r} ({exc.strerror}).") from None
        return from_safetensors_bytes(data, name=name)

    # -- writes ----------------------------------------------------------------------------------
    def _insert(self, vec: SteeringVector, file: str) -> None:
        self.con.execute(
            "INSERT INTO vectors (name, method, layer, dataset, model_id, norm, d_model, operator, created, meta, file) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [vec.name, vec.method, vec.layer, vec.dataset, vec.model_id, vec.norm, vec.d_model, vec.operator,
             vec.created, json.dumps(vec.meta, ensure_ascii=False), file])

    def _write_file(self, path: Path, data: bytes) -> None:
        """Atomically put ``data`` at ``path`` (temporary file in the same folder, then os.replace)."""
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, file_mode())  # mkstemp makes 0600: other readers (an app under another uid) need more
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _check_free(self, name: str, overwrite: bool, remedy: str) -> None:
        rows = [r[0] for r in self.con.execute("SELECT name FROM vectors WHERE lower(name) = lower(?)", [name]).fetchall()]
        clash = [r for r in rows if r != name]
        if clash:
            raise VectorError(f"A vector named {clash[0]!r} already exists; names differing only in capitals would "
                              "share one file on some systems, so choose another name.")
        if rows and not overwrite:
            raise VectorError(f"A vector named {name!r} already exists; {remedy}.")

    def check_name(self, name: str, overwrite: bool = False, remedy: str = _REMEDY) -> str:
        """The cleaned name :meth:`save` would use for ``name``, or the error it would raise (an invalid
        name, a clash in capitals, an existing name without ``overwrite``), so that a caller can refuse
        before costly work. ``remedy`` ends the existing-name message (a page names its checkbox)."""
        name = clean_vector_name(name)
        with self._lock:
            self._check_free(name, overwrite, remedy)
        return name

    def save(self, vec: SteeringVector, overwrite: bool = False) -> str:
        """Save under ``vec.name`` (cleaned; returned). An existing name is refused unless
        ``overwrite``. All or nothing: when the database write fails, the new file is removed or
        the previous one put back, and the error is raised."""
        if not isinstance(vec, SteeringVector):
            raise VectorError(f"Only SteeringVector objects can be saved, not {type(vec).__name__}.")
        name = clean_vector_name(vec.name)
        if name != vec.name:
            import dataclasses

            vec = dataclasses.replace(vec, name=name)
        data = to_safetensors_bytes(vec)
        check_file_size(len(data), "vector file")
        path = self._path(f"{name}.{os.urandom(4).hex()}.safetensors")
        with self._lock:
            self._check_free(name, overwrite, _REMEDY)
            old_file = self._file_of(name)
            try:
                self._write_file(path, data)
            except OSError as exc:
                raise VectorError(f"Could not write {path} ({exc.strerror or first_line(exc)}); nothing was saved.") from None
            crash_point("vector_save:file_written")
            try:
                with self._transaction(self.con):
                    self.con.execute("DELETE FROM vectors WHERE name = ?", [name])
                    self._insert(vec, path.name)
                    crash_point("vector_save:before_commit")
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)  # the old row and file are untouched
                if isinstance(exc, SteeringCoreError) or not isinstance(exc, Exception):
                    raise
                raise VectorError(f"Could not record {name!r} in the vector library ({first_line(exc)}); "
                                  "nothing was saved.") from exc
            crash_point("vector_save:committed")
            if old_file is not None and old_file != path.name:
                with contextlib.suppress(OSError):
                    self._path(old_file).unlink(missing_ok=True)
        return name

    def delete(self, name: str) -> None:
        """Remove a saved vector: its row first (one transaction), then its file."""
        name = clean_vector_name(name)
        with self._lock:
            file = self._file_of(name)
            if file is None:
                raise VectorError(f"No saved vector named {name!r}.")
            with self._transaction(self.con):
                self.con.execute("DELETE FROM vectors WHERE name = ?", [name])
            crash_point("vector_delete:committed")
            with contextlib.suppress(OSError):
                self._path(file).unlink(missing_ok=True)


__all__ = ["VectorStore"]
