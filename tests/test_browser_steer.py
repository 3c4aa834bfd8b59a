"""Real browser, real embedded model, no network: the home page and the Steer page work end to end."""

from __future__ import annotations

import re

from browser import ARTIFACTS, browser_page, serve_app


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
