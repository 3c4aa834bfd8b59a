"""Real browser on a tiny pack: search → card → click an effect row → second card → that
feature highlighted in the first card's list (cross-highlighting), with a screenshot."""

from __future__ import annotations

import re

import pytest
from browser_util import ARTIFACTS, browser_page, serve_app, tiny_pack_app

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)


def test_search_card_click_effect_row_cross_highlights(tiny_pack_build, tmp_path):
    env, cache = tiny_pack_app(tiny_pack_build, tmp_path)
    from steering_core.pack.reader import FeaturePack

    p = FeaturePack(cache / "pack")
    first = p.con.execute("SELECT min(source_feature) FROM feature_effects").fetchone()[0]
    p.close()
    with serve_app(env) as url, browser_page() as page:
        page.goto(url + "/features")
        page.get_by_role("heading", name="Features").first.wait_for()
        page.get_by_text("Feature id", exact=True).first.click()
        query = page.get_by_role("textbox", name="Query")
        query.fill(str(first))
        query.press("Enter")
        page.get_by_role("heading", name=re.compile(rf"#{first} ·")).first.wait_for()
        # click the first data row of the card's Effects table (a canvas grid: click by position)
        grid = page.locator("[data-testid='stDataFrame']").first
        grid.wait_for()
        grid.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 35 + 17)
        second_heading = page.get_by_role("heading", name=re.compile(r"#\d+ ·")).first
        page.wait_for_function(
            f"() => [...document.querySelectorAll('h3')].some(h => /#\\d+ ·/.test(h.innerText) && !h.innerText.includes('#{first} ·'))")
        title = second_heading.inner_text()
        second = int(re.search(r"#(\d+) ·", title).group(1))
        assert second != first
        page.get_by_role("tab", name="Workspace").click()
        first_card = page.locator("[data-testid='stColumn']").filter(visible=True).filter(
            has=page.locator("h3", has_text=f"#{first} ·")).first
        first_card.wait_for()
        # the first card's Effects list now says it holds the selected feature
        first_card.get_by_text(re.compile(rf"#{second} is in this list")).first.wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "features.png"), full_page=True)


def test_compare_rows_open_their_card_and_the_map_shows_the_card_beside_it(tiny_pack_build, tmp_path):
    """Issue 16: Compare's tables are clickable like every list, and the Map shows the open card
    beside the map."""
    env, cache = tiny_pack_app(tiny_pack_build, tmp_path)
    with serve_app(env) as url, browser_page() as page:
        page.goto(url + "/features?feature=2")
        page.get_by_role("heading", name=re.compile(r"#2 ·")).first.wait_for()
        page.get_by_role("tab", name="Compare").click()
        page.get_by_text("Jaccard overlap of the cosine and effect neighbourhoods").wait_for()
        tables = page.locator("[data-testid='stTabPanel']").filter(visible=True).locator("[data-testid='stDataFrame']")
        grid = None
        for _ in range(120):  # the tables draw after the Venn diagram: wait for one with rows
            grid = next((tables.nth(i) for i in range(tables.count())
                         if (tables.nth(i).bounding_box() or {}).get("height", 0) > 60), None)
            if grid is not None:
                break
            page.wait_for_timeout(500)
        assert grid is not None, "no Compare table with rows appeared"
        grid.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 30, box["y"] + 35 + 17)  # the first data row
        page.wait_for_function("() => !/[?&]feature=2(&|$)/.test(window.location.search)")
        opened = int(re.search(r"feature=(\d+)", page.url).group(1))
        assert opened != 2
        page.get_by_role("tab", name="Map").click()
        panel = page.locator("[data-testid='stTabPanel']").filter(visible=True)
        panel.locator(".js-plotly-plot").first.wait_for()
        panel.get_by_role("heading", name=re.compile(rf"#{opened} ·")).first.wait_for()  # the card beside the map
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "features-map-card.png"), full_page=True)


def test_effects_toggle_between_raw_and_specific_in_the_browser(tiny_pack_build, tmp_path):
    """Issue 14 in a real browser (tiny pack): the card's lists carry ± and the Raw/Specific toggle
    switches them; the CSV of the Effects list shows the standard errors and the specific values."""
    import csv
    import io

    from browser_util import wait_idle

    from steering_core.pack.reader import FeaturePack

    env, cache = tiny_pack_app(tiny_pack_build, tmp_path)
    from steering_core.browse import DEFAULT_MAX_DENSITY, ListFilter, effects_list

    p = FeaturePack(cache / "pack")  # what the card shows by default: dense features hidden, 32 rows
    want = {basis: [(r.feature_id, r.value) for r in effects_list(
        p, 2, ListFilter(max_density=DEFAULT_MAX_DENSITY, basis=basis), k=32)] for basis in ("raw", "specific")}
    p.close()
    with serve_app(env) as url, browser_page() as page:
        page.goto(url + "/features?feature=2")
        page.get_by_role("heading", name=re.compile(r"#2 ·")).first.wait_for()
        wait_idle(page)
        for basis, label in (("raw", None), ("specific", "Specific")):
            if label:
                page.get_by_test_id("stSidebar").get_by_text(label, exact=True).click()
                wait_idle(page)
            expected = [(t, round(v, 5)) for t, v in want[basis]]
            for _ in range(20):  # on a loaded machine the rerun may start after wait_idle's pause
                with page.expect_download() as dl:
                    page.get_by_role("button", name="CSV", exact=True).first.click()
                rows = list(csv.DictReader(io.StringIO(open(dl.value.path(), encoding="utf-8").read())))
                shown = [(int(r["feature_id"]), round(float(r["value"]), 5)) for r in rows]
                if shown == expected:
                    break
                wait_idle(page)
            assert shown == expected
            assert rows and all(float(r["se"]) >= 0 for r in rows)  # every measured row has its error
        page.screenshot(path=str(ARTIFACTS / "features-specific.png"), full_page=True)
