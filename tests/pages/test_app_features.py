"""The Features page (AppTest) on a tiny pack the tests build: search, card, the four lists,
filters, compare, map, and clear messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture(autouse=True)
def _tiny_app(monkeypatch):
    """Pages in these tests run on the tiny model (set per test, so nothing leaks into others)."""
    monkeypatch.setenv("STEERING_MODEL", "tiny")


ROOT = Path(__file__).resolve().parents[2]


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "features.py"), default_timeout=120)
    return at.run()


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [str(m.value) for m in at.metric]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    parts += [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def _search(at: AppTest, mode: str, query: str) -> AppTest:
    at.radio(key="search_mode").set_value(mode)
    at.text_input(key="search_query").set_value(query)
    return at.run()


def test_search_by_id_opens_a_full_card(app_env):
    at = _search(_page(), "Feature id", "3")
    assert not at.exception, at.exception
    text = _text(at)
    assert "### #3 ·" in text or "#3 ·" in text
    labels = {m.label for m in at.metric}
    assert {"Density", "Max activation", "Loss-matched α", "Baseline activation"} <= labels
    base = next(m for m in at.metric if m.label == "Baseline activation")
    assert base.delta.startswith("± ")  # a measured figure carries its uncertainty
    for title in ("Effects", "Actions", "Cosine-similar", "Effect-similar"):
        assert f"**{title}**" in text
    # the four lists render as tables with rows
    assert len(at.dataframe) >= 3
    assert at.session_state["pins"][0] == 3


@pytest.mark.parametrize("query, message", [("-1", "does not exist"), ("99999", "does not exist"),
                                            ("abc", "whole numbers")])
def test_bad_ids_get_a_sentence(app_env, query, message):
    at = _search(_page(), "Feature id", query)
    assert not at.exception
    assert message in " ".join(e.value for e in at.error)


def test_label_and_semantic_search(app_env):
    at = _page()
    at = _search(at, "Label text", "zzzz-no-such-label")
    assert "No feature matches" in _text(at)
    from steering_core.pack.reader import FeaturePack

    p = FeaturePack(app_env / "pack")
    label = p.feature(5)["label"]
    p.close()
    at = _search(at, "Label text", label)
    assert not at.exception
    df = at.dataframe[0].value
    assert 5 in df["feature"].tolist()
    at = _search(at, "Meaning (semantic)", label)
    assert not at.exception
    assert at.dataframe[0].value["feature"].iloc[0] == 5 or 5 in at.dataframe[0].value["feature"].tolist()


def test_what_fires_here(app_env):
    at = _search(_page(), "What fires here", "Hello there, general Kenobi")
    assert not at.exception, at.exception
    df = at.dataframe[0].value
    assert {"token", "feature", "activation"} <= set(df.columns) and len(df) > 0


def test_filters_shrink_lists(app_env):
    at = _search(_page(), "Feature id", "3")
    before = sum(len(d.value) for d in at.dataframe)
    at.number_input(key="f_min_abs").set_value(1e6)
    at = at.run()
    assert not at.exception
    after = sum(len(d.value) for d in at.dataframe)
    assert after < before
    assert "nothing to show" in _text(at)


def test_compare_and_groups(app_env):
    fresh = _page()
    assert fresh.text_input(key="compare_id").value == "0" and not fresh.error  # nothing opened yet: feature 0
    at = _search(fresh, "Feature id", "3")
    assert any(m.label.startswith("Jaccard") for m in at.metric)
    assert "Jaccard of the two groups" in _text(at)
    assert "two random lists of" in _text(at) and "on average" in _text(at)  # the chance yardstick
    assert at.text_input(key="compare_id").value == "3"  # the opened feature is the one compared
    # helper audit: filters that leave no neighbours showed "Jaccard 0.00" and "0 of 16 in both", and
    # "1.00" for two groups that were the seed alone
    at.number_input(key="f_min_abs").set_value(1e6).run()
    assert not any(m.label.startswith("Jaccard") for m in at.metric)
    assert "nothing to overlap" in _text(at) and "Jaccard of the two groups" not in _text(at)
    assert "no neighbours to grow one of the groups from" in _text(at)


def test_map_has_points(app_env):
    at = _search(_page(), "Feature id", "3")
    charts = at.get("plotly_chart")
    assert charts, "no plotly charts"
    import json

    specs = [json.loads(c.proto.spec) for c in charts]
    scatter = [s for s in specs if any(t.get("type") == "scattergl" for t in s.get("data", []))]
    assert scatter and len(scatter[0]["data"][0]["x"]) > 10


def test_label_edit_is_saved_outside_the_pack(app_env):
    before = (app_env / "pack" / "pack.duckdb").read_bytes()
    at = _search(_page(), "Feature id", "3")
    at.text_input(key="card_3_label").set_value("my own label")
    at.button(key="card_3_save").click()
    at = at.run()
    assert "Saved" in _text(at)
    at = _page()
    at = _search(at, "Feature id", "3")
    assert "my own label" in _text(at)
    assert (app_env / "pack" / "pack.duckdb").read_bytes() == before
    assert (app_env / "user.duckdb").exists()


def test_no_pack_is_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("STEERING_SAE", "tiny")
    at = _page()
    assert not at.exception
    assert "No feature pack is open" in _text(at)


def test_empty_pack_is_a_message(tmp_path, monkeypatch):
    from steering_core.pack.tables import ensure_schema
    from steering_core.storage.db import connect

    (tmp_path / "pack").mkdir()
    con = connect(tmp_path / "pack" / "pack.duckdb")
    ensure_schema(con)
    con.close()
    (tmp_path / "pack" / "sae").mkdir()
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("STEERING_SAE", str(tmp_path / "pack" / "sae"))
    at = _page()
    assert not at.exception
    at = _search(at, "Feature id", "0")
    assert not at.exception
    assert "no features" in _text(at).lower() or "No feature pack" in _text(at)


def test_steer_with_this_feature_fills_the_steer_page(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/features.py")
    at = _search(at.run(), "Feature id", "3")
    at.button(key="card_3_steer").click()
    at = at.run()
    assert not at.exception, at.exception
    assert "Steer" in [t.value for t in at.title]  # landed on the Steer page
    assert at.text_input(key="vec_feature").value == "3"
    assert at.session_state["vec_feature"] == "3"
    assert at.session_state["layer"] == 1
    assert at.session_state["alpha"] > 0


def test_card_histogram_ticks_are_powers_of_ten_and_quantile_captions_precede_their_snippets(app_env):
    """The log axis is labelled 1, 10, 100, … (not "1000, 5, 2, 100"), and each lower-quantile
    sample is introduced by its caption instead of being followed by the next one's."""
    import json

    at = _search(_page(), "Feature id", "3")
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    hist = next(s for s in specs if any(t.get("type") == "bar" for t in s.get("data", [])))
    assert hist["layout"]["yaxis"]["type"] == "log" and hist["layout"]["yaxis"]["dtick"] == 1
    body = next(m.value for m in at.markdown if "sample</div>" in m.value)
    parts = body.split("sample</div>")
    assert len(parts) > 1 and parts[-1].strip()  # the last caption is followed by its snippet
    assert not body.rstrip().endswith("sample</div>")


def test_list_bars_show_size_on_one_scale_for_both_signs(app_env):
    """A list's bar is |value| from 0 to the largest |value|, so −1.66 never looks smaller than
    0.2; the signed value sits beside it."""
    at = _search(_page(), "Feature id", "3")
    frames = [d.value for d in at.dataframe if "size" in d.value.columns]
    assert len(frames) >= 3  # the card's ranked lists
    for df in frames:
        assert (df["size"] == df["value"].abs()).all()
    assert any((df["value"] < 0).any() for df in frames)  # the tiny pack has negative effects to show


def test_card_shows_the_exact_next_token_description(app_env):
    at = _search(_page(), "Feature id", "3")
    text = _text(at)
    assert "**Steering raises**" in text and "**Steering lowers**" in text and "**Output score**" in text


def test_effect_lists_show_errors_and_switch_to_specific_effects(app_env):
    """Issue 14: every effects list shows ± (its SE); the Raw/Specific toggle switches the values to
    raw − generic response; hiding noise removes rows within 2 SE."""
    at = _search(_page(), "Feature id", "3")
    effects = at.dataframe[0].value
    assert "se" in effects.columns and effects["se"].notna().all() and (effects["se"] >= 0).all()
    at.radio(key="f_basis").set_value("specific")
    at = at.run()
    assert not at.exception, at.exception
    specific = at.dataframe[0].value
    assert "se" in specific.columns
    assert not specific["value"].round(6).tolist() == effects["value"].round(6).tolist()
    at.toggle(key="f_hide_noise").set_value(True)
    at = at.run()
    kept = at.dataframe[0].value
    assert len(kept) <= len(specific)
    assert ((kept["value"].abs() >= 2 * kept["se"]) | kept["se"].isna()).all()


def test_hide_hubs_toggle_removes_the_marked_hub_targets(app_env):
    """The ◎ hub targets stay in specific lists (their sign follows the direction); the sidebar
    toggle hides exactly them and leaves the other rows in order."""
    at = _search(_page(), "Feature id", "3")
    before = at.dataframe[0].value
    hubs = before["label"].str.startswith("◎ ")
    assert hubs.any() and (~hubs).any(), "feature 3 of the tiny pack should list hubs and non-hubs"
    at.toggle(key="f_hide_hubs").set_value(True)
    at = at.run()
    assert not at.exception, at.exception
    after = at.dataframe[0].value
    assert not after["label"].str.startswith("◎ ").any()
    assert after["feature"].tolist()[: int((~hubs).sum())] == before.loc[~hubs, "feature"].tolist()


def _workspace_columns(at: AppTest) -> int:
    """How many columns the Workspace tab's first row of cards has."""
    work = next(t for t in at.tabs if t.label == "Workspace")
    first = work.children[0]
    return sum(1 for c in first.children.values() if type(c).__name__ == "Column")


def test_a_single_pinned_card_takes_the_workspace_width(app_env):
    """A user-style audit: one pinned card sat in the left half beside an empty right half, its
    lists' labels cut off; two or more sit side by side."""
    at = _search(_page(), "Feature id", "3")
    assert at.session_state["pins"] == [3] and _workspace_columns(at) == 1
    at = _search(at, "Feature id", "4")
    assert set(at.session_state["pins"]) == {3, 4} and _workspace_columns(at) == 2


def test_importing_a_workspace_with_more_cards_than_fit_says_which_are_not_pinned(app_env):
    """Audit: a workspace file with 10 pinned cards said "Imported 10 pinned cards" and pinned 8."""
    import json

    import ui

    at = _page()
    pinned = list(range(ui.MAX_PINS + 2))
    body = json.dumps({"pinned": pinned, "labels": {"3": "my label"}}).encode()
    at.file_uploader(key="ws_import").set_value(("workspace.json", body, "application/json"))
    at = at.run()
    assert not at.exception, at.exception
    assert at.session_state["pins"] == pinned[:ui.MAX_PINS]
    # the cards drawn are the file's, in this very run (they used to be the old ones until a later rerun)
    titles = [m.value for m in at.markdown if m.value.startswith("### ")]
    assert titles and titles[0].startswith("### ★ #0 ·") and at.session_state["selected"] == 0
    assert any(s.value == f"Imported {len(pinned)} pinned cards, 1 label, 0 notes." for s in at.success)
    rest = ", ".join(f"#{f}" for f in pinned[ui.MAX_PINS:])
    assert any(f"the first {ui.MAX_PINS} of the file's {len(pinned)} are pinned ({rest} are not)" in w.value
               for w in at.warning)
    bad = _page()
    bad.file_uploader(key="ws_import").set_value(("w.json", b'{"pinned": [1, "x"]', "application/json"))
    bad = bad.run()
    assert bad.error and "not valid JSON" in bad.error[0].value
    assert not bad.success and not bad.session_state["pins"]  # nothing of a broken file is applied
