"""Sweep keywords suggested from the pack (steering_core.browse.suggest): the words a feature is
about, output words only for features that steer better than a random direction, no function
words, and a Sweep page button that fills the fields."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from steering_core.describe.labels import sweep_keywords

ROOT = Path(__file__).resolve().parents[2]


def test_keywords_leave_out_function_words_and_noise_output_words():
    top = [" wedding", " a", " be", " the", "xy", " bride", " wedding"]
    gains = [" love", " the", " ceremony", "\n"]
    assert sweep_keywords(top, gains, steers=True) == ["wedding", "bride", "love", "ceremony"]
    assert sweep_keywords(top, gains, steers=False) == ["wedding", "bride"]  # output words would be noise
    assert sweep_keywords([" a", " of"], [" love"], steers=False) == []


def _plant(pack_db: Path, fid: int, words: list[str], output_score: float) -> None:
    con = duckdb.connect(str(pack_db))
    try:
        con.execute("UPDATE features SET top_tokens = ?, output_score = ? WHERE feature_id = ?",
                    [words, output_score, fid])
    finally:
        con.close()


def test_a_feature_that_does_not_steer_gets_its_input_words_and_a_warning(app_env):
    from steering_core.browse.rows import feature_table
    from steering_core.browse.suggest import sweep_suggestion
    from steering_core.pack.reader import FeaturePack

    _plant(app_env / "pack" / "pack.duckdb", 1, [" wedding", " of", " cake"], 0.0)
    pack = FeaturePack(app_env / "pack" / "pack.duckdb")
    try:
        if feature_table(pack).steers_well_bar is None:
            pytest.skip("the tiny pack has no steers-well bar")
        got = sweep_suggestion(pack, 1)
    finally:
        pack.close()
    assert got.keywords == ("wedding", "cake") and got.concept == "wedding, cake"
    assert got.steers_well is False and "no more than a random direction" in got.note


def test_the_sweep_page_fills_keywords_and_concept_from_the_feature(app_env):
    from streamlit.testing.v1 import AppTest

    _plant(app_env / "pack" / "pack.duckdb", 1, [" wedding", " of", " cake"], 0.0)
    at = AppTest.from_file(str(ROOT / "pages" / "sweep.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "sw_suggest"]  # a saved vector or feature 0: nothing planted
    at.radio(key="sw_source").set_value("SAE feature (decoder row)")
    at.text_input(key="sw_feature").set_value("1")
    at = at.run()
    assert any(c.value == "From the pack: wedding, cake" for c in at.caption)
    assert any("no more than a random direction" in c.value for c in at.caption)
    at = at.button(key="sw_suggest").click().run()
    assert not at.exception, at.exception
    assert at.text_input(key="sw_keywords").value == "wedding, cake"
    assert at.text_input(key="sw_concept").value == "wedding, cake"
    assert not [b for b in at.button if b.key == "sw_suggest"]  # the fields hold the suggestion now


def _plant_density(pack_db: Path, fid: int, density: float) -> None:
    con = duckdb.connect(str(pack_db))
    try:
        con.execute("UPDATE features SET density = ? WHERE feature_id = ?", [density, fid])
    finally:
        con.close()


def _plant_example(pack_db: Path) -> None:
    """Feature 2 steers most toward readable words; 4 steers more but is dense; 3 steers less."""
    con = duckdb.connect(str(pack_db))
    try:
        con.execute("UPDATE features SET output_score = -1")
    finally:
        con.close()
    _plant(pack_db, 2, [" wedding", " cake", " bride"], 0.9)
    _plant(pack_db, 3, [" river", " boat", " water"], 0.5)
    _plant(pack_db, 4, [" stone", " rock", " sand"], 5.0)
    for fid in (2, 3):
        _plant_density(pack_db, fid, 0.01)
    _plant_density(pack_db, 4, 0.9)


def test_the_example_feature_steers_most_toward_readable_words_and_is_not_dense(app_env):
    from steering_core.browse.suggest import example_feature
    from steering_core.pack.reader import FeaturePack

    db = app_env / "pack" / "pack.duckdb"
    _plant_example(db)
    pack = FeaturePack(db)
    try:
        assert example_feature(pack) == 2
        assert example_feature(pack, max_density=1.0) == 4  # with dense features allowed
    finally:
        pack.close()


def test_a_first_sweep_opens_on_the_example_feature_with_its_words(app_env):
    """A user-style audit: a new Sweep page swept feature 0 for wedding words, a flat curve."""
    from streamlit.testing.v1 import AppTest

    from steering_core.browse.suggest import sweep_suggestion
    from steering_core.pack.reader import FeaturePack

    db = app_env / "pack" / "pack.duckdb"
    _plant_example(db)
    pack = FeaturePack(db)
    try:
        want = sweep_suggestion(pack, 2)
    finally:
        pack.close()
    at = AppTest.from_file(str(ROOT / "pages" / "sweep.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    assert at.radio(key="sw_source").value == "SAE feature (decoder row)"  # no saved vectors yet
    assert at.text_input(key="sw_feature").value == "2"
    assert at.text_input(key="sw_keywords").value == ", ".join(want.keywords)
    assert at.text_input(key="sw_concept").value == want.concept
    assert any(c.value.startswith("#2 · ") and "Unit direction at block" in c.value for c in at.sidebar.caption)
    at.text_input(key="sw_feature").set_value("3").run()  # the user's own choices are kept from then on
    assert at.text_input(key="sw_keywords").value == ", ".join(want.keywords)
