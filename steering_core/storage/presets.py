"""Named Steer-page presets: the vector source(s), layer, α and generation settings a person wants
to come back to. Stored as JSON in the library file (table ``steer_presets``), reached in the app
as ``Library.presets``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
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


# -- applying a preset -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PresetTarget:
    """What a preset is applied to: the loaded model, the user's library now and the page's limits.
    A preset outlives all of them (a vector deleted, another model loaded), so each setting is
    checked against them when it is loaded, not when it was saved."""

    n_layers: int
    sources: tuple[str, ...]  # the vector sources the page offers, as a preset stores them
    vector_names: tuple[str, ...] = ()
    n_features: int | None = None  # the SAE's features; None without an SAE
    max_samples: int = 16
    max_temperature: float = 5.0
    #: source → the setting that names its vector ("vec_feature" for the SAE source, …)
    source_keys: dict[str, str] = field(default_factory=dict)


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return None
    return float(x)


def _whole(x: Any, lo: int, hi: int | None = None) -> bool:
    v = _number(x)
    return v is not None and v == int(v) and lo <= v and (hi is None or v <= hi)


def applicable(settings: dict, target: PresetTarget) -> tuple[dict, list[str]]:
    """The settings of a preset that can be applied as they are, and one sentence for each that
    cannot (a saved vector deleted since, a layer this model lacks, …). Applying a setting the page
    would then silently replace shows a result under settings that did not produce it, so those are
    left out and said instead."""
    t = target
    checks: dict[str, tuple[str, Callable[[Any], str | None]]] = {
        "vec_source": ("vector source", lambda v: None if v in t.sources else "the page has no such source"),
        "vec_seed": ("direction seed", lambda v: None if _whole(v, 0) else "a seed is a whole number, 0 or more"),
        "vec_feature": ("feature", lambda v: None if t.n_features is None or (
            isinstance(v, str) and v.strip().isdigit() and int(v) < t.n_features)
            else f"the SAE has features 0 to {t.n_features - 1}"),
        "vec_saved": ("saved vector", lambda v: None if v in t.vector_names else "there is no saved vector by that name"),
        "layer": ("layer", lambda v: None if _whole(v, 0, t.n_layers - 1)
                  else f"this model's layers are 0 to {t.n_layers - 1}"),
        "alpha": ("α", lambda v: None if _number(v) is not None else "α is a finite number"),
        "prompt": ("prompt", lambda v: None if isinstance(v, str) else "a prompt is text"),
        "n_samples": ("samples", lambda v: None if _whole(v, 1, t.max_samples) else f"samples are 1 to {t.max_samples}"),
        "max_tokens": ("max new tokens", lambda v: None if _whole(v, 1) else "a token count is a whole number, 1 or more"),
        "temperature": ("temperature", lambda v: None if (x := _number(v)) is not None and 0 <= x <= t.max_temperature
                        else f"the temperature is 0 to {t.max_temperature:g}"),
        "seed": ("seed", lambda v: None if _whole(v, 0) else "a seed is a whole number, 0 or more"),
        "chat": ("chat template", lambda v: None if isinstance(v, bool) else "it is on or off"),
    }
    kept: dict = {}
    notes: list[str] = []
    for key, value in settings.items():
        if key in checks:
            label, check = checks[key]
            why = check(value)
            if why is None:
                kept[key] = value
            else:
                notes.append(f"The preset's {label} {value!r} was not applied: {why}.")
    source = settings.get("vec_source")
    key = t.source_keys.get(source) if isinstance(source, str) else None
    if key is not None and key in settings and key not in kept:
        # its vector is the preset: the rest applied to another vector would be another experiment
        return {}, [f"Nothing was loaded: this preset steers with {checks[key][0]} {settings[key]!r}, which cannot "
                    f"be used now ({checks[key][1](settings[key])})."]
    extras = settings.get("extra_vectors", [])
    if not isinstance(extras, list) or not all(isinstance(x, str) for x in extras):
        notes.append("The preset's extra vectors were not applied: they are not a list of names.")
        extras = []
    gone = [x for x in extras if x not in t.vector_names]
    if gone:
        many = len(gone) > 1
        notes.append(f"The preset's extra vector{'s' if many else ''} {', '.join(map(repr, gone))} "
                     + ("no longer exist and are left out." if many else "no longer exists and is left out."))
    if "extra_vectors" in settings:
        kept["extra_vectors"] = [x for x in extras if x in t.vector_names]
    for key, value in settings.items():
        if key.startswith("extra_alpha_") and key[len("extra_alpha_"):] in kept.get("extra_vectors", []):
            if _number(value) is not None:
                kept[key] = value
            else:
                notes.append(f"The preset's α for {key[len('extra_alpha_'):]!r} ({value!r}) was not applied: "
                             "α is a finite number.")
    return kept, notes
