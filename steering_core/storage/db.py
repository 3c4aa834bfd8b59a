"""DuckDB plumbing shared by every database the project writes: opening a file with errors a
person can act on, and all-or-nothing transactions. Every write goes through :func:`transaction`,
so a killed process leaves either the old rows or the new ones. The pack's tables are declared in
:mod:`steering_core.pack.tables`; the user's own library file is :mod:`steering_core.storage.library`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from steering_core.errors import SteeringCoreError


class StoreError(SteeringCoreError):
    """A pack or cache database that cannot be opened or written safely."""


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
