"""Concurrency through the running app, in real chromium sessions on one server (one loaded
model): four sessions steering at once with different vectors, α and seeds each get exactly what
they get alone; a long sweep in one session does not freeze another session's page, shows its
progress, and stops on request with its finished α values kept. (The same guarantee through the
library, with threads, is tests/model/test_steering.py::test_four_threads_steering_at_once_get_their_solo_results.)"""

from __future__ import annotations

import contextlib
import re

import pytest
from browser_util import ARTIFACTS, CHROMIUM, serve_app

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)

# (direction seed, keys pressed on the α slider, sampling seed)
SESSIONS = [(1, [], 0), (2, ["End"], 5), (3, ["Home"], 7), (4, ["End", "ArrowLeft"], 9)]


@contextlib.contextmanager
def chromium_contexts(n: int):
    """``n`` independent browser sessions (separate cookies, separate Streamlit sessions)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update"])
        try:
            pages = [browser.new_context(viewport={"width": 1300, "height": 1000}).new_page() for _ in range(n)]
            for page in pages:
                page.set_default_timeout(120_000)
            yield pages
        finally:
            browser.close()


def _set_number(page, name: str, value) -> None:
    box = page.get_by_role("spinbutton", name=name, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_function(f"() => [...document.querySelectorAll('input[type=number]')]"
                           f".some(e => e.getAttribute('aria-label') === {name!r} && e.value === {str(value)!r})")


def _configure_steer(page, url: str, direction_seed: int, keys: list[str], seed: int) -> str:
    """Open the Steer page and set up one session's request; returns the α it shows."""
    page.goto(url + "/steer")
    page.get_by_role("heading", name="Steer").first.wait_for()
    page.get_by_text("Random unit vector").first.click()
    _set_number(page, "Direction seed", direction_seed)
    page.get_by_text(f"random unit vector (seed {direction_seed})").first.wait_for()
    slider = page.get_by_role("slider").nth(1)  # the layer slider comes first
    heading = page.get_by_role("heading", name=re.compile(r"Steered \(α = "))
    before = heading.inner_text()
    slider.focus()
    for key in keys:
        slider.press(key)
    if keys:  # wait for the rerun that carries the new α (a fixed pause lost key presses on a busy machine)
        page.wait_for_function("b => [...document.querySelectorAll('h4')].some(h => h.innerText.startsWith("
                               "'Steered (α = ') && h.innerText !== b)", arg=before)
    page.wait_for_timeout(800)  # the slider sends its value after a short pause
    _set_number(page, "Samples", 2)
    _set_number(page, "Max new tokens", 40)
    _set_number(page, "Temperature (0 = greedy)", "1.00")
    _set_number(page, "Seed", seed)
    page.wait_for_timeout(500)
    return page.get_by_role("heading", name=re.compile(r"Steered \(α = ")).inner_text()


def _texts(page) -> tuple[list[str], list[str]]:
    page.get_by_text("Finished:").wait_for(timeout=180_000)
    unsteered = page.locator("[data-testid='stAlertContentInfo']")
    steered = page.locator("[data-testid='stAlertContentSuccess']")
    return ([unsteered.nth(i).inner_text() for i in range(2)], [steered.nth(i).inner_text() for i in range(2)])


def _save_vector(cache):
    import torch

    from steering_core.vectors import SteeringVector, VectorStore

    with VectorStore(cache) as store:
        store.save(SteeringVector("long", 1, torch.randn(64, generator=torch.Generator().manual_seed(3)), method="caa"))


def test_four_sessions_at_once_get_their_solo_results_and_a_long_sweep_freezes_nobody(tmp_path):
    cache = tmp_path / "cache"
    _save_vector(cache)
    env = {"STEERING_MODEL": "tiny", "STEERING_SAE": "", "STEERING_CACHE_DIR": str(cache)}
    with serve_app(env) as url, chromium_contexts(4) as pages:
        # alone: one session at a time, each on a fresh page
        alone, alphas = [], []
        for page, (dseed, keys, seed) in zip(pages, SESSIONS):
            alphas.append(_configure_steer(page, url, dseed, keys, seed))
            page.get_by_role("button", name="Generate").click()
            alone.append(_texts(page))
        assert len(set(alphas)) == 4, alphas  # four different α
        assert len({str(t[1]) for t in alone}) == 4  # and four different steered outcomes to keep apart
        # together: fresh pages, same settings, all four Generate clicks at once
        for page, (dseed, keys, seed), alpha in zip(pages, SESSIONS, alphas):
            assert _configure_steer(page, url, dseed, keys, seed) == alpha
        for page in pages:
            page.get_by_role("button", name="Generate").click()
        together = [_texts(page) for page in pages]
        pages[0].screenshot(path=str(ARTIFACTS / "concurrent-steer.png"), full_page=True)
        for i, (a, b) in enumerate(zip(alone, together)):
            assert a == b, f"session {i} got a different result when others steered at the same time"

        # a long sweep in one session; another session steers meanwhile; then the sweep is stopped
        long_page, other = pages[0], pages[1]
        long_page.goto(url + "/sweep")
        long_page.get_by_role("heading", name="Sweep α").first.wait_for()
        long_page.get_by_text("Manual", exact=True).first.click()
        grid = long_page.get_by_role("textbox", name="Manual grid (comma-separated)")
        grid.fill(", ".join(str(a) for a in range(0, 24, 2)))
        grid.press("Enter")
        _set_number(long_page, "Samples per prompt and α", 16)
        _set_number(long_page, "Tokens per rollout", 200)
        long_page.wait_for_timeout(500)
        long_page.get_by_role("button", name="Run sweep").click()
        progress = long_page.get_by_text(re.compile(r"α = [\d.]+ \(\d+/12\)"))
        progress.first.wait_for()  # progress is shown α by α

        _configure_steer(other, url, 1, [], 0)
        other.get_by_role("button", name="Generate").click()
        assert _texts(other) == alone[0]  # the other session was served while the sweep ran ...
        assert progress.first.is_visible()  # ... and the sweep is still running
        assert not long_page.get_by_text(re.compile("peak .* × coherence")).first.is_visible()

        long_page.get_by_role("button", name="Stop", exact=True).click()
        note = long_page.get_by_text(re.compile(r"Stopped\. \d+ of 12 α values were finished"))
        note.first.wait_for()
        kept = int(re.search(r"Stopped\. (\d+) of 12", note.first.inner_text()).group(1))
        assert 1 <= kept < 12
        long_page.locator(".js-plotly-plot").first.wait_for()  # the kept points are plotted
        long_page.wait_for_timeout(800)
        long_page.screenshot(path=str(ARTIFACTS / "sweep-stopped.png"), full_page=True)
