"""The user's library file, ``library.duckdb``: saved datasets, saved vectors, measured vector
effects, sweep points and Steer-page presets, all in one DuckDB file (docs/design.md §Storage
contract).

DuckDB lets one process hold a file, and one connection must not run two statements at once. So
a :class:`Library` opens the file once — one connection, one lock that every store takes around
its work, every table created on open — and hands out the stores built on it:
``.datasets``, ``.vectors``, ``.effects``, ``.sweeps`` and ``.presets``. :func:`open_library`
keeps one Library per file for the whole process (the app's sessions share it).

Each store class also works on its own (``DatasetStore(path)``, ``VectorStore(root)`` …, as
tests and scripts use them): :class:`LibraryTable` is the common base that either borrows a
Library's connection and lock or opens the file itself.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from steering_core.model.loading import cache_dir
from steering_core.storage.db import StoreError, connect, transaction

if TYPE_CHECKING:
    from steering_core.datasets.store import DatasetStore
    from steering_core.measure.sweep import SweepCache
    from steering_core.measure.vector_effects import EffectCache
    from steering_core.storage.presets import PresetStore
    from steering_core.vectors.store import VectorStore


def default_library_db() -> Path:
    """``cache_dir()/library.duckdb``: one library file per project cache."""
    return cache_dir() / "library.duckdb"


class LibraryTable:
    """A store over some tables of the library file. Given a connection (and the lock that
    guards it), as a :class:`Library` builds its stores, it works on that connection and never
    closes it; given only a path (default :func:`default_library_db`), it opens the file itself
    and closes it on :meth:`close`. Subclasses list their ``CREATE TABLE IF NOT EXISTS``
    statements in ``SCHEMA``; they are run on construction, in one transaction."""

    SCHEMA: tuple[str, ...] = ()

    def __init__(self, path: str | Path | None = None, con=None, lock: threading.RLock | None = None):
        self._lock = lock if lock is not None else threading.RLock()
        self._owns_con = con is None
        self.con = con if con is not None else connect(Path(path).expanduser() if path else default_library_db())
        try:
            with self._lock, transaction(self.con):
                for stmt in self.SCHEMA:
                    self.con.execute(stmt)
        except BaseException:
            if self._owns_con:
                self.con.close()
            raise

    def close(self) -> None:
        """Close the connection if this store opened it (a Library's stays open: close the Library)."""
        with self._lock:
            if self._owns_con:
                self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Library:
    """``library.duckdb`` opened once: one connection, one lock, every store's tables created on
    open. The stores (``datasets``, ``vectors``, ``effects``, ``sweeps``, ``presets``) share the
    connection and the lock, so a transaction of one never interleaves with a statement of
    another, and their crash-safety rules stay what each store documents. Saved vector tensors
    live next to the file, in ``<folder of the file>/vectors``.

    Opening fails with a :class:`~steering_core.storage.db.StoreError` a person can act on when
    another process holds the file or it is not a DuckDB file; nothing is left open then.
    """

    datasets: DatasetStore
    vectors: VectorStore
    effects: EffectCache
    sweeps: SweepCache
    presets: PresetStore

    def __init__(self, path: str | Path | None = None):
        from steering_core.datasets.store import DatasetStore
        from steering_core.measure.sweep import SweepCache
        from steering_core.measure.vector_effects import EffectCache
        from steering_core.storage.presets import PresetStore
        from steering_core.vectors.store import VectorStore

        self.path = (Path(path).expanduser() if path else default_library_db()).resolve()
        if self.path.name == "pack.duckdb":
            raise StoreError("The library never goes into a pack's pack.duckdb (packs are read-only); "
                             "choose another file.")
        self.lock = threading.RLock()
        self.con = connect(self.path)
        self._closed = False
        shared = {"con": self.con, "lock": self.lock}
        try:
            self.datasets = DatasetStore(self.path, **shared)
            self.vectors = VectorStore(self.path.parent, **shared)
            self.effects = EffectCache(self.path, **shared)
            self.sweeps = SweepCache(self.path, **shared)
            self.presets = PresetStore(self.path, **shared)
        except BaseException:
            self.con.close()
            raise

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (the stores then refuse every call)."""
        return self._closed

    def close(self) -> None:
        """Release the file (another process may open it afterwards). The next
        :func:`open_library` of this path opens it again instead of handing out a closed one."""
        with _OPEN_LOCK:
            if _OPEN.get(self.path) is self:
                del _OPEN[self.path]
        with self.lock:
            if not self._closed:
                self._closed = True
                self.con.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r}{', closed' if self._closed else ''})"


_OPEN: dict[Path, Library] = {}
_OPEN_LOCK = threading.Lock()


def open_library(path: str | Path | None = None) -> Library:
    """The one open :class:`Library` for this file in this process (default
    :func:`default_library_db`), opened on first use. Thread-safe: sessions that ask at the same
    moment get the same object, and the file is opened once."""
    p = (Path(path).expanduser() if path else default_library_db()).resolve()
    with _OPEN_LOCK:
        lib = _OPEN.get(p)
        if lib is None or lib.closed:
            lib = _OPEN[p] = Library(p)
        return lib


@atexit.register
def close_libraries() -> None:
    """Close every library :func:`open_library` opened, so DuckDB's connections are released
    before the interpreter finalises (a stopped app ends quietly, and its file is whole)."""
    with _OPEN_LOCK:
        libs = list(_OPEN.values())
    for lib in libs:
        lib.close()
