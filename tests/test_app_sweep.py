"""The Sweep page (AppTest) on the tiny model and its tiny SAE: a manual sweep with curves and
samples, the cache on reopening, bad grids, and the next-token view."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture(autouse=True)
def _tiny_app(monkeypatch):
    """Pages in these tests run on the tiny model (set per test, so nothing leaks into others)."""
    monkeypatch.setenv("STEERING_MODEL", "tiny")


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def page(sweep_page_app):
    return sweep_page_app


def _sweep(at: AppTest, grid: str) -> AppTest:
    from conftest import run_manual_sweep

    return run_manual_sweep(at, grid)


def test_manual_sweep_draws_curves_and_keeps_samples(page):
    at = _sweep(page, "0, 5, 20")
    assert not at.exception, at.exception
    res = at.session_state["sw_result"]
    assert [p.alpha for p in res["points"]] == [0.0, 5.0, 20.0]
    assert any("peak keywords × coherence" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) >= 1 and at.dataframe
    assert len(at.text) >= 3  # sample completions at the chosen α
    assert res["points"][0].scores["coherence"] == 1.0


def test_bad_grids_get_messages(page):
    at = _sweep(page, "0, nan")
    assert at.error and "finite" in at.error[0].value
    at = _sweep(at, "0, ten")
    assert at.error and "numbers separated by commas" in at.error[0].value
    at.text_input(key="sw_grid").set_value("0, 5")
    at.text_input(key="sw_keywords").set_value(" , ")
    at = at.button(key="sw_go").click().run()
    assert at.error and "keyword list is empty" in at.error[0].value


def test_next_token_view(page):
    at = page.button(key="nt_go").click().run()
    assert not at.exception, at.exception
    cur, dc = at.session_state["nt_result"]
    assert len(cur.alphas) == 21 and cur.delta_p.shape[0] == 21
    assert len(at.get("plotly_chart")) >= 2


def test_compare_methods_tab(page):
    page.text_input(key="sw_keywords").set_value("the, a")
    page.number_input(key="sw_samples").set_value(1)
    page.number_input(key="sw_tokens").set_value(4)
    page.text_input(key="cmp_features").set_value("1, 2")
    at = page.button(key="cmp_go").click().run()
    assert not at.exception, at.exception
    rows, curves = at.session_state["cmp_result"]
    assert {r.name for r in rows} == {"feature 1", "feature 2"} and set(curves) == {"feature 1", "feature 2"}
    at = at.button(key="cmp_go").click().run()  # the same comparison again: served from the sweep cache
    assert not at.exception
    page.text_input(key="cmp_features").set_value("")
    at = page.button(key="cmp_go").click().run()
    assert at.error and "at least one" in at.error[0].value


def test_unreachable_judge_warns_and_keeps_the_curves(page):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    page.text_input(key="judge_url").set_value(f"http://127.0.0.1:{port}/v1")
    at = _sweep(page.run(), "0, 5")
    assert not at.exception, at.exception
    assert at.warning and "cannot be reached" in at.warning[0].value
    pts = at.session_state["sw_result"]["points"]
    assert [p.alpha for p in pts] == [0.0, 5.0] and all("keywords" in p.scores for p in pts)
