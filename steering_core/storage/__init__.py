"""Storage: DuckDB files written so that a killed process never leaves half a write.

- :mod:`~steering_core.storage.db`: opening a file with errors a person can act on, transactions,
  the pack schema
- :mod:`~steering_core.storage.library`: the user's ``library.duckdb`` as one :class:`Library`
  (datasets, vectors, effects, sweeps, presets on one connection); :func:`open_library`
- :mod:`~steering_core.storage.presets`: named Steer-page presets
- :mod:`~steering_core.storage.crashpoints`: the test hook that kills a process at a named point
"""

from steering_core.storage.db import StoreError, connect, transaction
from steering_core.storage.library import Library, LibraryTable, default_library_db, open_library

__all__ = ["Library", "LibraryTable", "StoreError", "connect", "default_library_db", "open_library", "transaction"]
