"""Real browser, real embedded model, no network: the home page and the Steer page work end to end."""

from __future__ import annotations

import re

import pytest
from browser_util import ARTIFACTS, browser_page, serve_app

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)


def test_home_and_steer_pages_in_chromium_on_the_embedded_model():
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app({"STEERING_MODEL": "embedded", "STEERING_SAE": ""}) as url, browser_page() as page:
        page.goto(url)
        page.get_by_text("SmolLM2-135M-Instruct").first.wait_for()
        page.get_by_text("Mean residual norm after each block").wait_for()
        page.get_by_text("blocks.15.hook_resid_post").first.wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
        page.wait_for_timeout(1500)  # let plotly finish drawing before the screenshot
        page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

        page.get_by_role("link", name=re.compile("Steer")).first.click()
        page.get_by_role("heading", name=re.compile("Steer")).first.wait_for()
        page.get_by_text("‖resid‖ at layer 15").wait_for()
        # no CSS transitions (ui.motion): repainting the stale elements' fades and the slider's ticks took the model's cores
        props = page.evaluate("() => [...document.querySelectorAll('.stElementContainer, [data-testid=stSlider] *')]"
                              ".map(e => getComputedStyle(e).transitionProperty)")
        assert props and set(props) == {"none"}
        prompt = page.get_by_role("textbox", name="Prompt")
        prompt.fill("What is the capital of France?")
        temp = page.get_by_role("spinbutton", name="Temperature (0 = greedy)")
        temp.fill("0")
        temp.press("Enter")
        page.get_by_role("button", name="Generate").click()
        unsteered = page.locator("[data-testid='stAlertContentInfo']")
        steered = page.locator("[data-testid='stAlertContentSuccess']")
        unsteered.nth(1).wait_for()
        page.get_by_text("Finished:").wait_for(timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "steer.png"), full_page=True)
        texts_u = [unsteered.nth(i).inner_text() for i in range(2)]
        texts_s = [steered.nth(i).inner_text() for i in range(2)]
        assert "Paris" in texts_u[0]  # greedy, unsteered: the model answers
        assert texts_u[0] == texts_u[1]  # temperature 0: both unsteered samples agree
        assert all(t.strip() and t != "…" for t in texts_s)


def test_dragging_alpha_regenerates_the_steered_column_with_its_header():
    """Issue 16: releasing the α slider is the experiment. The steered column and its header change
    together; the unsteered column is reused and says "from cache"."""
    from browser_util import fill_number, wait_idle

    with serve_app({"STEERING_MODEL": "embedded", "STEERING_SAE": ""}) as url, browser_page() as page:
        page.goto(url + "/steer?alpha=20&seed=3&prompt=Tell%20me%20about%20your%20weekend.")
        page.get_by_text("‖resid‖ at layer 15").wait_for()
        wait_idle(page)  # the link's first run finished before any widget is touched (see the closing note)
        assert "+20.0" in page.get_by_role("heading", name=re.compile(r"Steered")).inner_text()
        fill_number(page, "Max new tokens", 12)
        fill_number(page, "Samples", 1)
        wait_idle(page)
        page.get_by_role("button", name="Generate").click()
        page.get_by_text("Finished:").wait_for(timeout=120_000)
        wait_idle(page)
        header = page.get_by_role("heading", name=re.compile(r"Steered \(α"))
        before_h = header.inner_text()
        steered = page.locator("[data-testid='stAlertContentSuccess']")
        unsteered = page.locator("[data-testid='stAlertContentInfo']")
        before_s, before_u = steered.first.inner_text(), unsteered.first.inner_text()
        assert "+20.0" in before_h

        thumb = page.get_by_role("slider", name="α")
        thumb.focus()
        thumb.press("End")  # the keyboard's drag to the right end of the slider
        page.get_by_text("from cache").first.wait_for(timeout=120_000)
        page.get_by_text("Finished:").wait_for(timeout=120_000)
        wait_idle(page)
        after_h = header.inner_text()
        assert after_h != before_h and "+20.0" not in after_h
        assert steered.first.inner_text() != before_s  # a new steered text under the new header
        assert unsteered.first.inner_text() == before_u  # the same unsteered text, reused
        page.screenshot(path=str(ARTIFACTS / "steer-live-alpha.png"), full_page=True)
