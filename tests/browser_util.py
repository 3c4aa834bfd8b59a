"""Helpers for real-browser tests: start the app as a server, drive Debian's chromium with Playwright."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str], timeout: float) -> tuple[subprocess.Popen, str] | None:
    """Start one server on a free port; None when it exited before answering (another test worker
    took the port between our probe and streamlit's bind: try another). The server counts as ours
    only once its own log announces the port: a health answer alone may come from whoever took it."""
    port = _free_port()
    log_dir = ARTIFACTS if ARTIFACTS.exists() else Path(tempfile.mkdtemp(prefix="st-server-"))
    log_path = log_dir / f"server-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", "127.0.0.1"],
            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.time() + timeout
    while True:
        # poll first: a server that failed to bind must not be mistaken for whoever holds the port
        if proc.poll() is not None:
            return None
        announced = f"{url}" in log_path.read_text(errors="replace")
        try:
            if announced and urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok" \
                    and proc.poll() is None:
                return proc, url
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s (log: {log_path})")
        time.sleep(0.5)


@contextlib.contextmanager
def serve_app(env: dict[str, str], timeout: float = 180):
    """Run `streamlit run app.py` on a free port; yield its URL; stop it afterwards."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STEERING_")}  # only what the test says
    full_env = {**inherited, "HF_HUB_OFFLINE": "1", **env}
    for _ in range(3):
        started = _start(full_env, timeout)
        if started is not None:
            break
    else:
        raise RuntimeError("streamlit exited before answering, three times (see the server logs)")
    proc, url = started
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def browser_page():
    """A headless chromium page (no sandbox, no background networking, fresh profile)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            try:
                yield page
            except BaseException:  # what the page showed when the test failed: the first thing to look at
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(ARTIFACTS / f"failure-{time.strftime('%H%M%S')}.png"))
                raise
        finally:
            browser.close()


def tiny_pack_app(pack_build: Path, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of an app on the tiny model with a copy of a tiny pack build as its cache
    (the app may write user files there; the build stays untouched), and that cache folder."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(pack_build / "pack", cache / "pack")
    env = {"STEERING_MODEL": "tiny", "STEERING_CACHE_DIR": str(cache), "STEERING_SAE": str(cache / "pack" / "sae")}
    return env, cache


# -- small driving helpers for Streamlit pages (used by the end-to-end walk) -------------------------
def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until the Streamlit script is not running (the app's own run-state attribute). The
    short pause first lets a rerun that was just triggered mark the app as running."""
    page.wait_for_timeout(300)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(state="attached",
                                                                                        timeout=timeout)


def go_to_page(page, title: str) -> None:
    """Click a page's link in the sidebar, as a person does (the session and its state are kept)."""
    page.get_by_test_id("stSidebar").get_by_role("link", name=title, exact=True).click()


def choose(scope, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` inside ``scope`` (a page or a locator)."""
    page = getattr(scope, "page", scope)  # a Locator knows its page; a Page is its own
    scope.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def fill_number(scope, label: str, value) -> None:
    """Type a value into a number input and commit it (Enter), as a person does."""
    box = scope.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def screenshot_all(page, path) -> None:
    """A screenshot of the whole app. Streamlit scrolls inside its own container, so a plain
    full-page screenshot stops at the window: grow the window to the content for the shot."""
    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'[data-testid=stMain], [data-testid=stAppViewContainer], [data-testid=stSidebarContent]')]"
        ".map(e => e.scrollHeight), window.innerHeight)")
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 12_000)})
    try:
        page.wait_for_timeout(500)  # relayout (plotly redraws at the new size)
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
