"""Steer presets: round trip, validation, nothing written on refusal."""

from __future__ import annotations

import pytest

from steering_core.storage.presets import PresetError, PresetStore


def test_round_trip_overwrite_and_delete(tmp_path):
    store = PresetStore(tmp_path / "lib.duckdb")
    settings = {"source": "SAE feature", "feature": "812", "layer": 15, "alpha": 56.5, "extra": [["w", 20.0]]}
    assert store.save(" wedding  ", settings) == "wedding"
    assert store.load("wedding") == settings
    store.save("wedding", {**settings, "alpha": 10.0})
    assert store.load("wedding")["alpha"] == 10.0
    with pytest.raises(PresetError, match="exists"):
        store.save("wedding", settings, overwrite=False)
    store.delete("wedding")
    assert store.names() == []
    store.close()


@pytest.mark.parametrize("name, settings, message", [
    ("../x", {"a": 1}, "path"),
    ("", {"a": 1}, "name"),
    ("ok", {"alpha": float("nan")}, "cannot be stored"),
    ("ok", {"blob": "x" * 70_000}, "at most"),
    ("ok", ["not", "a", "dict"], "named settings"),
])
def test_bad_presets_are_refused_and_nothing_is_written(tmp_path, name, settings, message):
    store = PresetStore(tmp_path / "lib.duckdb")
    with pytest.raises(PresetError, match=message):
        store.save(name, settings)
    assert store.names() == []
    with pytest.raises(PresetError, match="No preset"):
        store.load("missing")
    store.close()
