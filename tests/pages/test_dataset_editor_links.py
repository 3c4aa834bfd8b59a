"""The Datasets page's links: /dataset_editor?example=NAME (or ?dataset=NAME for a saved one)
opens that dataset, a link the page cannot follow says why, and the address follows what was
loaded or saved, so it can be shared."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def _linked(**params) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "dataset_editor.py"), default_timeout=120)
    at.query_params.update(params)
    return at.run()


def _param(at: AppTest, key: str):
    value = at.query_params.get(key)
    return value[-1] if isinstance(value, list) else value


def test_an_example_link_opens_that_example_and_the_address_follows_loads_and_saves(app_env, monkeypatch):
    monkeypatch.setenv("STEERING_MODEL", "tiny")
    at = _linked(example="london_vs_paris")
    assert not at.exception, at.exception
    assert at.selectbox(key="ds_open").value == "example: london_vs_paris"
    assert any(c.value.startswith("44 pairs · 35 train · 9 heldout") for c in at.caption)
    assert not at.warning
    assert _param(at, "example") == "london_vs_paris"
    at.text_input(key="ds_name").set_value("capitals")
    at = at.button(key="ds_save").click().run()
    assert _param(at, "dataset") == "capitals" and _param(at, "example") is None  # now the saved copy
    saved = _linked(dataset="capitals")  # a new session, as a colleague on the same library opens it
    assert saved.selectbox(key="ds_open").value == "saved: capitals" and saved.text_input(key="ds_name").value == "capitals"
    at = at.button(key="ds_delete").click().run()
    assert _param(at, "dataset") is None  # the address no longer links a deleted dataset


def test_a_link_to_a_dataset_this_library_lacks_says_so_and_opens_an_empty_table(app_env, monkeypatch):
    monkeypatch.setenv("STEERING_MODEL", "tiny")
    at = _linked(dataset="colleagues-set", tab="edit")
    assert not at.exception, at.exception
    words = [w.value for w in at.warning]
    assert words == ["The link's dataset='colleagues-set' was ignored: there is no saved dataset by that name in "
                     "this library.", "The link's 'tab' was ignored: this page's links take dataset, example."]
    assert at.selectbox(key="ds_open").value == "(new, empty)"
