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


# -- applying a preset to the model and library of now --------------------------------------------


def _target(**kw):
    from steering_core.storage.presets import PresetTarget

    base = dict(n_layers=4, sources=("Random", "SAE", "Saved"), vector_names=("kept",), n_features=40,
                max_samples=16, source_keys={"Random": "vec_seed", "SAE": "vec_feature", "Saved": "vec_saved"})
    return PresetTarget(**{**base, **kw})


def test_a_preset_applies_what_still_fits_and_says_what_does_not():
    """Audit: a preset with a layer this model lacks, a deleted extra vector or a mistyped value
    was applied silently or crashed the page (int('abc'))."""
    from steering_core.storage.presets import applicable

    good = {"vec_source": "SAE", "vec_feature": "7", "layer": 2, "alpha": -3.5, "prompt": "hi", "n_samples": 2,
            "max_tokens": 20, "temperature": 0.0, "seed": 4, "chat": False, "extra_vectors": ["kept"],
            "extra_alpha_kept": 9.0}
    assert applicable(good, _target()) == (good, [])
    kept, notes = applicable({**good, "layer": 9, "seed": "x", "temperature": float("inf"), "chat": "yes",
                              "extra_vectors": ["kept", "gone"], "extra_alpha_gone": 1.0, "n_samples": True},
                             _target())
    assert kept == {k: v for k, v in good.items() if k not in ("layer", "seed", "temperature", "chat", "n_samples")}
    assert notes == ["The preset's layer 9 was not applied: this model's layers are 0 to 3.",
                     "The preset's samples True was not applied: samples are 1 to 16.",
                     "The preset's temperature inf was not applied: the temperature is 0 to 5.",
                     "The preset's seed 'x' was not applied: a seed is a whole number, 0 or more.",
                     "The preset's chat template 'yes' was not applied: it is on or off.",
                     "The preset's extra vector 'gone' no longer exists and is left out."]


def test_a_preset_whose_vector_is_gone_loads_nothing():
    """Its other settings on whatever vector the page falls back to would be another experiment."""
    from steering_core.storage.presets import applicable

    kept, notes = applicable({"vec_source": "Saved", "vec_saved": "deleted", "alpha": 5.0}, _target())
    assert kept == {} and notes == ["Nothing was loaded: this preset steers with saved vector 'deleted', which "
                                    "cannot be used now (there is no saved vector by that name)."]
    kept, notes = applicable({"vec_source": "SAE", "vec_feature": "3000", "alpha": 5.0}, _target())
    assert kept == {} and "the SAE has features 0 to 39" in notes[0]
    # another source's leftover key does not matter: a random-vector preset with a stale feature id
    kept, notes = applicable({"vec_source": "Random", "vec_seed": 3, "vec_feature": "3000"}, _target())
    assert kept == {"vec_source": "Random", "vec_seed": 3} and len(notes) == 1
