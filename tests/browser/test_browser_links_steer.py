"""Real browser on the tiny model and a tiny pack: a shared Steer link (/steer?feature=…&alpha=…)
opens the page with those settings, the address bar follows the settings, and a bad value in a
link gets a sentence instead of a crash."""

from __future__ import annotations

import re

from browser_util import browser_page, fill_number, serve_app, tiny_pack_app, wait_idle
from playwright.sync_api import expect


def test_a_steer_link_fills_the_settings_and_the_url_follows_them(tiny_pack_build, tmp_path):
    env, cache = tiny_pack_app(tiny_pack_build, tmp_path)
    with serve_app(env) as url, browser_page() as page:
        page.goto(url + "/steer?feature=3&alpha=2.5&layer=1&prompt=Hello%20there&seed=4")
        page.get_by_role("heading", name="Steer").first.wait_for()
        page.get_by_text("‖resid‖ at layer 1").wait_for()
        wait_idle(page)
        expect(page.get_by_role("textbox", name="Feature id")).to_have_value("3")
        expect(page.get_by_role("textbox", name="Prompt")).to_have_value("Hello there")
        expect(page.get_by_role("spinbutton", name="Seed", exact=True)).to_have_value("4")
        expect(page.get_by_test_id("stSliderThumbValue")).to_have_text(["1", "2.50"])  # layer, then α
        expect(page.get_by_text("SAE feature 3 decoder row").first).to_be_visible()
        assert page.locator("[data-testid='stException']").count() == 0

        fill_number(page, "Seed", 7)  # the address bar follows the settings, so it can be shared
        page.wait_for_url(re.compile(r"seed=7"))
        assert "feature=3" in page.url and "alpha=2.5" in page.url and "layer=1" in page.url

        page.goto(url + "/steer?alpha=abc&feature=3")  # a new session from a bad link
        page.get_by_text("The link's alpha='abc' was ignored").wait_for()
        wait_idle(page)
        expect(page.get_by_role("textbox", name="Feature id")).to_have_value("3")
        assert page.locator("[data-testid='stException']").count() == 0


def test_a_click_during_the_links_first_run_keeps_the_links_settings(tiny_pack_build, tmp_path):
    """A person who changes a setting while the linked page is still drawing interrupts its first
    run; the rerun must still show the link's α, not the layer's default."""
    env, cache = tiny_pack_app(tiny_pack_build, tmp_path)
    with serve_app(env) as url, browser_page() as page:
        for samples in (1, 3):
            page.goto(url + "/steer?feature=3&alpha=2.5&layer=1&prompt=Hello%20there&seed=4")
            page.get_by_role("spinbutton", name="Samples", exact=True).wait_for()
            fill_number(page, "Samples", samples)  # no wait: the first run may still be going
            wait_idle(page)
            expect(page.get_by_role("spinbutton", name="Samples", exact=True)).to_have_value(str(samples))
            expect(page.get_by_test_id("stSliderThumbValue")).to_have_text(["1", "2.50"])
            assert "alpha=2.5" in page.url and "seed=4" in page.url
