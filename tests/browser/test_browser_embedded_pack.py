"""The shipped embedded pack in a real browser, as a researcher first meets it (issues 14 and 15):

* /features?feature=630 opens the wedding feature's card, whose effect lists carry a ± column and
  whose sidebar offers Raw and Specific effects, and hides the hub targets the specific view keeps;
* a label search for "wedding" finds #630 with a wedding label;
* a meaning search for "weddings and marriage" puts only wedding/marriage/celebration-like labels
  in its top five;
* "Test this feature on my text" paints a wedding sentence and reports the peak activation;
* a feature that fires mostly on attention sinks says so on its card.

Screenshots land in test-artifacts/embedded-*.png."""

from __future__ import annotations

import re
import time

import pytest
from browser_util import ARTIFACTS, browser_page, screenshot_all, serve_app, wait_idle
from test_browser_e2e import grid_rows, keyed, temp_cache

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)

WEDDING = 630
#: A feature whose activation is 99.8 % on the corpus's attention-sink tokens ("attention sink · al, numbers, Gold …").
SINK_FEATURE = 572
#: Words a label about weddings, marriage or celebrations would contain.
WEDDING_LIKE = re.compile(r"wedd|marri|bride|groom|ceremon|celebrat|anniversar|honeymoon|engag|reception|vow|party|"
                          r"love|famil|guest", re.I)


def _rows_after_rerun(page, main, before: list[dict], timeout_s: float = 60) -> list[dict]:
    """The card's effect rows once the rerun a click started has redrawn them. ``wait_idle`` alone
    can return before a slow rerun has begun (it then read the old rows, and CI failed on it), so
    read again until the rows differ from ``before`` or the time is up (the caller's assertion
    then says what was shown)."""
    deadline = time.monotonic() + timeout_s
    while True:
        wait_idle(page)
        now = grid_rows(keyed(main, f"card_{WEDDING}_effects"))
        if now != before or time.monotonic() > deadline:
            return now
        page.wait_for_timeout(500)


def test_the_wedding_feature_with_error_bars_search_and_my_text(tmp_path):
    cache = temp_cache(tmp_path)
    env = {"STEERING_MODEL": "embedded", "STEERING_CACHE_DIR": str(cache)}
    with serve_app(env) as url, browser_page() as page:
        main, sidebar = page.get_by_test_id("stMain"), page.get_by_test_id("stSidebar")

        # -- the card, from a link: ± on every effect row, Raw/Specific in the sidebar -----------------
        page.goto(f"{url}/features?feature={WEDDING}")
        heading = main.get_by_role("heading", name=re.compile(rf"#{WEDDING} ·")).first
        heading.wait_for()
        assert re.search(r"wedding", heading.inner_text(), re.I), heading.inner_text()
        assert f"feature={WEDDING}" in page.url  # the address keeps naming the open card
        basis = sidebar.get_by_role("radiogroup", name="Effects shown")
        basis.get_by_text("Specific", exact=True).wait_for()
        assert basis.get_by_role("radio", name="Raw").is_enabled()
        effects = keyed(main, f"card_{WEDDING}_effects")
        rows = grid_rows(effects)
        assert len(rows) >= 5 and "±" in rows[0], rows[:2]
        assert all(float(r["±"]) > 0 for r in rows), rows[:5]  # a standard error on every stored effect
        base = main.get_by_test_id("stMetric").filter(has_text="Baseline activation").first.inner_text()
        assert re.search(r"0\.0\d+\s+± 0\.0\d+\s+one SE", base), base  # the baseline's own ±, under it
        wait_idle(page)
        screenshot_all(page, ARTIFACTS / "embedded-630-raw.png")
        basis.get_by_text("Specific", exact=True).click()
        specific = _rows_after_rerun(page, main, rows)
        assert [r["feature"] for r in specific] != [r["feature"] for r in rows]  # the generic response is gone
        screenshot_all(page, ARTIFACTS / "embedded-630-specific.png")
        assert any("◎" in r["label"] for r in specific), specific[:10]  # hubs survive the specific view
        sidebar.get_by_text("Hide hub targets ◎").click()
        no_hubs = _rows_after_rerun(page, main, specific)
        assert no_hubs and not any("◎" in r["label"] for r in no_hubs), no_hubs[:10]
        screenshot_all(page, ARTIFACTS / "embedded-630-specific-no-hubs.png")

        # -- test this feature on my text ---------------------------------------------------------------
        main.get_by_text("Test this feature on my text").first.click()
        mine = main.get_by_role("textbox", name="Text").first
        mine.fill("The bride and groom cut the wedding cake at the reception.")
        mine.press("Enter")
        caption = main.get_by_text(re.compile(r"Peak activation [\d.]+")).first
        caption.wait_for()
        assert float(re.search(r"Peak activation ([\d.e+-]+)", caption.inner_text()).group(1)) > 0
        screenshot_all(page, ARTIFACTS / "embedded-630-my-text.png")

        # -- label search "wedding" finds #630 ------------------------------------------------------------
        main.get_by_role("radiogroup", name="Search by").get_by_text("Label text").click()
        query = main.get_by_role("textbox", name="Query")
        query.fill("wedding")
        query.press("Enter")
        wait_idle(page)
        hits = grid_rows(keyed(main, "search_table"))
        found = {int(r["feature"]): r["label"] for r in hits}
        assert WEDDING in found and re.search("wedding", found[WEDDING], re.I), found

        # -- meaning search: only wedding-like labels in the top five -------------------------------------
        main.get_by_role("radiogroup", name="Search by").get_by_text("Meaning (semantic)").click()
        query.fill("weddings and marriage")
        query.press("Enter")
        wait_idle(page)
        top = grid_rows(keyed(main, "search_table"))[:5]
        assert len(top) == 5 and all(WEDDING_LIKE.search(r["label"]) for r in top), top
        screenshot_all(page, ARTIFACTS / "embedded-meaning-search.png")

        # -- a sink feature says so on its card; the wedding feature does not ----------------------------
        assert not main.get_by_text("Fires mostly on attention sinks").count()
        page.goto(f"{url}/features?feature={SINK_FEATURE}")
        main.get_by_role("heading", name=re.compile(rf"#{SINK_FEATURE} ·")).first.wait_for()
        warning = main.get_by_text(re.compile(r"Fires mostly on attention sinks: 99\.8% of its activation is on the "
                                              r"157 attention-sink tokens")).first
        warning.wait_for()
        screenshot_all(page, ARTIFACTS / "embedded-sink-feature.png")


def _words(part: str) -> list[str]:
    return [w.strip() for w in part.replace("/", ",").split(",") if w.strip()]


def test_the_shipped_pack_is_complete_and_its_labels_readable():
    """Issues 14 and 15 on the shipped pack itself: an SE and a specific effect on every stored
    effect, the generic response and hub flags, and for every live feature a description, TokenChange
    lists, an output score and a label whose words are dictionary words or tokens the feature fires on."""
    import json

    import numpy as np
    from browser_util import ROOT

    from steering_core.describe.words import is_word, readable
    from steering_core.pack.sinks import SINK_LABEL
    from steering_core.storage.db import connect

    con = connect(ROOT / "cache" / "pack" / "pack.duckdb", read_only=True)
    try:
        d_sae = int(con.execute("SELECT value FROM meta WHERE key = 'd_sae'").fetchone()[0])
        assert con.execute("SELECT count(*) FROM feature_effects WHERE effect_se IS NULL OR specific IS NULL "
                           "OR specific_se IS NULL").fetchone()[0] == 0
        assert con.execute("SELECT count(*), count(*) FILTER (WHERE hub) FROM generic_response").fetchone()[0] == d_sae
        assert con.execute("SELECT count(*) FILTER (WHERE hub) FROM generic_response").fetchone()[0] > 0
        rows = con.execute("SELECT feature_id, label, description, token_change, output_score, top_tokens "
                           "FROM features WHERE live").fetchall()
    finally:
        con.close()
    assert len(rows) > 3000
    bad = []
    for fid, label, desc, tc, score, top in rows:
        assert desc and desc.startswith("Fires on"), (fid, desc)
        change = json.loads(tc)
        assert change["gains"] and change["losses"] and np.isfinite(score), fid
        # The input side names what it fires on: a dictionary word, a symbol's name ("line break"),
        # or, for a piece, the quoted token itself ("“str”"); the output side only dictionary words.
        fired = {readable(t, fired=True) for t in (top or [])} - {None}
        ins, _, outs = label.removeprefix(SINK_LABEL).partition(" → ")
        bad += [(fid, w) for w in _words(ins) if w != "unreadable tokens" and not (is_word(w) or w in fired)]
        bad += [(fid, w) for w in _words(outs) if not is_word(w)]
    assert not bad, bad[:20]


def test_no_card_lists_two_snippets_with_the_same_text():
    """Issue 15: a snippet list never shows two snippets whose text is the same except for the
    highlighted token. Every feature's snippets, folded as the pack reader folds them for a card."""
    from browser_util import ROOT

    from steering_core.describe.inputs import collapse_same_text
    from steering_core.storage.db import connect

    con = connect(ROOT / "cache" / "pack" / "pack.duckdb", read_only=True)
    try:
        rows = con.execute("SELECT feature_id, kind, rank, tokens FROM feature_snippets "
                           "ORDER BY feature_id, kind = 'top' DESC, kind, rank").fetchall()
    finally:
        con.close()
    by_feature: dict[int, list[dict]] = {}
    for fid, kind, rank, tokens in rows:
        by_feature.setdefault(fid, []).append({"kind": kind, "rank": rank, "tokens": tokens, "similar": 1})
    assert len(by_feature) > 3000
    dup = []
    for fid, snips in by_feature.items():
        texts = ["".join(s["tokens"]) for s in collapse_same_text(snips)]
        if len(texts) != len(set(texts)):
            dup.append(fid)
    assert not dup, dup[:10]
    raw = [fid for fid, snips in by_feature.items() if len({"".join(s["tokens"]) for s in snips}) != len(snips)]
    assert raw == [1725]  # the one the build left, byte-fallback pieces that all print "\ufffd"
