"""The Features page names one feature everywhere (bug 2: the search box said #630 while the card
showed #3002) and links to any feature: ``/features?feature=3`` opens card #3, and opening a card
puts it in the address. A real browser opening ``/features?feature=630`` on the shipped pack is in
tests/browser/test_browser_embedded_pack.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tiny_app(monkeypatch):
    monkeypatch.setenv("STEERING_MODEL", "tiny")


def _page(**params) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "features.py"), default_timeout=120)
    at.query_params.update(params)
    return at.run()


def _search_id(at: AppTest, query: str) -> AppTest:
    at.radio(key="search_mode").set_value("Feature id")
    at.text_input(key="search_query").set_value(query)
    return at.run()


def _card_titles(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("### ")]


def _click_row(at: AppTest, key: str, row: int) -> AppTest:
    """What a click on a list row sends: the dataframe's selection state."""
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    return at.run()


def test_box_and_card_name_the_same_feature_after_a_row_click(app_env):
    at = _search_id(_page(), "3")
    assert not at.exception, at.exception
    assert _card_titles(at)[0].startswith("### ★ #3 ·")
    # click the first row of the card's effect-similar list (another feature)
    df = next(d for d in at.dataframe if d.key == "card_3_effect_similar" or d.key.startswith("card_3_"))
    other = int(df.value["feature"].iloc[0])
    if other == 3:
        other = int(df.value["feature"].iloc[1])
        row = 1
    else:
        row = 0
    at = _click_row(at, df.key, row)
    assert not at.exception, at.exception
    assert at.session_state["selected"] == other
    # the box names the opened feature, and so does the card under it
    assert at.text_input(key="search_query").value == str(other)
    assert any(s.value.startswith(f"#{other} ·") for s in at.success)
    assert _card_titles(at)[0].startswith(f"### ★ #{other} ·")
    # searching 3 again opens #3 again (it used to say "#3" and keep showing the other card)
    at = _search_id(at, "3")
    assert not at.exception, at.exception
    assert any(s.value.startswith("#3 ·") for s in at.success)
    assert _card_titles(at)[0].startswith("### ★ #3 ·")
    assert at.query_params["feature"] == "3"


def test_a_link_opens_the_card_and_opening_a_card_updates_the_link(app_env):
    at = _page(feature=" 3 ")
    assert not at.exception, at.exception
    assert at.session_state["selected"] == 3
    assert _card_titles(at)[0].startswith("### ★ #3 ·")
    assert at.text_input(key="search_query").value == "3"
    at = _search_id(at, "5")
    assert at.query_params["feature"] == "5"
    assert _card_titles(at)[0].startswith("### ★ #5 ·")


@pytest.mark.parametrize("raw, message", [("abc", "whole numbers"), ("99999", "does not exist")])
def test_a_bad_link_gets_a_sentence(app_env, raw, message):
    at = _page(feature=raw)
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "This link asks for feature" in errors and message in errors, errors
    assert at.session_state["selected"] is None


def test_a_link_parameter_the_page_does_not_read_is_said(app_env):
    at = _page(feature="3", tab="map")
    assert not at.exception, at.exception
    assert _card_titles(at)[0].startswith("### ★ #3 ·")
    assert [w.value for w in at.warning if "link" in w.value] == [
        "The link's 'tab' was ignored: this page's links take feature."]


def _search_cards(at: AppTest) -> list[str]:
    return [m.value for m in at.tabs[0].markdown if m.value.startswith("### ")]


def test_a_list_search_shows_no_card_of_another_feature_and_a_bad_id_leaves_the_address(app_env):
    """User-style audit: after a meaning search the old #3 card still showed under results it was
    not among, and an invalid id hid the card but left ?feature=3 in the address."""
    at = _search_id(_page(), "3")
    assert _search_cards(at)[0].startswith("### ★ #3 ·") and at.query_params["feature"] == "3"
    at.radio(key="search_mode").set_value("Label text").run()
    at.text_input(key="search_query").set_value("zzzz-no-label-has-this").run()
    assert not at.exception, at.exception
    assert not _search_cards(at)  # no result: no card of the earlier feature under it
    label = at.session_state["selected"] and _card_titles(at)[0].split(" · ", 1)[1]
    at.text_input(key="search_query").set_value(label.split(",")[0].strip("“” ")).run()
    table = next(d for d in at.dataframe if d.key == "search_table").value
    assert "score" not in table.columns  # label search has no score; a column of None said nothing
    at.radio(key="search_mode").set_value("Meaning (semantic)").run()
    at.text_input(key="search_query").set_value("letters and words").run()
    table = next(d for d in at.dataframe if d.key == "search_table").value
    shown = set(table["feature"].astype(int))
    assert bool(_search_cards(at)) == (3 in shown)
    if 3 not in shown:
        assert any("#3, the open feature, is not among these results" in c.value for c in at.tabs[0].caption)
    at = _click_row(at, "search_table", 0)
    first = int(table["feature"].iloc[0])
    assert _search_cards(at)[0].startswith(f"### ★ #{first} ·") and at.query_params["feature"] == str(first)
    at.radio(key="search_mode").set_value("Feature id").run()  # names the open feature in the box
    assert at.text_input(key="search_query").value == str(first)
    at = _search_id(at, "-1")
    assert not _search_cards(at) and "feature" not in at.query_params
    at = _search_id(at, "3")
    assert _search_cards(at)[0].startswith("### ★ #3 ·") and at.query_params["feature"] == "3"
