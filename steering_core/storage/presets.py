"""Named Steer-page presets: the vector source(s), layer, α and generation settings a person wants
to come back to. Stored as JSON in the library file (table ``steer_presets``), reached in the app
as ``Library.presets``."""

from __future__ import annotations

import json
from typing import Any

from steering_core.errors import SteeringCoreError
from steering_core.names import InvalidNameError, clean_name
from steering_core.storage.db import transaction
from steering_core.storage.library import LibraryTable

MAX_PRESET_BYTES = 64_000


class PresetError(SteeringCoreError):
    """A preset that cannot be saved or found."""


class PresetStore(LibraryTable):
    """Presets by name, one JSON document each (overwritten in place: a preset has no history)."""

    SCHEMA = ("CREATE TABLE IF NOT EXISTS steer_presets (name TEXT PRIMARY KEY, settings TEXT, "
              "updated TIMESTAMP DEFAULT current_timestamp)",)

    def save(self, name: Any, settings: dict, overwrite: bool = True) -> str:
        """Store ``settings`` (JSON-serialisable, finite numbers only) under a validated name."""
        try:
            name = clean_name(name, "preset")
        except InvalidNameError as exc:
            raise PresetError(str(exc)) from None
        if not isinstance(settings, dict):
            raise PresetError("A preset is a set of named settings.")
        try:
            text = json.dumps(settings, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise PresetError(f"The settings cannot be stored: {exc}.") from None
        if len(text.encode()) > MAX_PRESET_BYTES:
            raise PresetError(f"A preset is at most {MAX_PRESET_BYTES // 1000} kB of settings.")
        with self._lock, transaction(self.con):
            if not overwrite and self.con.execute("SELECT 1 FROM steer_presets WHERE name = ?", [name]).fetchone():
                raise PresetError(f"A preset named {name!r} exists already.")
            self.con.execute("INSERT OR REPLACE INTO steer_presets (name, settings, updated) "
                             "VALUES (?, ?, current_timestamp)", [name, text])
        return name

    def load(self, name: str) -> dict:
        """The settings saved under ``name``, as they were given."""
        with self._lock:
            row = self.con.execute("SELECT settings FROM steer_presets WHERE name = ?", [name]).fetchone()
        if row is None:
            raise PresetError(f"No preset named {name!r}.")
        return json.loads(row[0])

    def names(self) -> list[str]:
        """Saved preset names, sorted, for a picker."""
        with self._lock:
            return [r[0] for r in self.con.execute("SELECT name FROM steer_presets ORDER BY name").fetchall()]

    def delete(self, name: str) -> None:
        """Forget a preset (nothing happens when there is none by that name)."""
        with self._lock, transaction(self.con):
            self.con.execute("DELETE FROM steer_presets WHERE name = ?", [name])
