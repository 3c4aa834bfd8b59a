"""Real browser on a tiny pack: search → card → click an effect row → second card → that
feature highlighted in the first card's list (cross-highlighting), with a screenshot."""

from __future__ import annotations

import re
import shutil

from browser import ARTIFACTS, browser_page, serve_app


def test_search_card_click_effect_row_cross_highlights(tiny_pack_build, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(tiny_pack_build / "pack", cache / "pack")
    from steering_core.pack.reader import FeaturePack

    p = FeaturePack(cache / "pack")
    first = p.con.execute("SELECT min(source_feature) FROM feature_effects").fetchone()[0]
    p.close()
    env = {"STEERING_MODEL": "tiny", "STEERING_CACHE_DIR": str(cache), "STEERING_SAE": str(cache / "pack" / "sae")}
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
