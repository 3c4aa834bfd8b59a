"""How the pages feel, measured in a real browser (Debian's chromium, headless) on the embedded
model and pack:

* ``steer_release_s``: from releasing the α slider (keyboard End) to the regenerated steered
  column (the page's defaults: 2 samples × 48 new tokens; the unsteered column from cache);
* ``steer_release_generation_s``: of that, the time the page spent generating (its "Finished … in
  N s" caption): the rest is the rerun, the transfer and the browser;
* ``steer_release_with_transitions_s``: the same release with the app's no-transitions style
  (``ui.motion``) switched off in the browser, alternating with the releases above, so the two
  medians share the machine's drift (``transitions_over_none`` is their ratio);
* ``steer_generate_s``: the same settings with Generate (both columns, for comparison);
* ``feature_card_open_s``: from typing a feature id and pressing Enter to its card's heading.

Medians of ``--repeats`` runs, within one run of the app.

    python -m bench.pages [--repeats 5] [--precision auto|fp32|bf16]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser_util import browser_page, serve_app, wait_idle  # noqa: E402

from bench.common import emit, log  # noqa: E402
from ui.motion import STYLE_ID  # noqa: E402


def _finished(page) -> None:
    # polled every 100 ms, not every animation frame: a query over the page 60 times a second took
    # the browser's share of the two cores from the generation it times
    page.wait_for_function("() => [...document.querySelectorAll('p')].filter(p => p.innerText.startsWith("
                           "'Finished:')).length > 0 && document.querySelector('[data-testid=stApp]')"
                           ".getAttribute('data-test-script-state') === 'notRunning'", timeout=300_000,
                           polling=100)


# Switches the app's no-transitions style off (or on again) and keeps it so: the rerun re-renders
# the style element, and a switch made on the old node alone would not outlast the release it measures.
_SWITCH = """(allow) => {
  window.__allowTransitions = allow;
  const apply = () => { const s = document.getElementById('%s'); if (s && s.disabled !== window.__allowTransitions)
                          s.disabled = window.__allowTransitions; };
  if (!window.__transitionObserver) {
    window.__transitionObserver = new MutationObserver(apply);
    window.__transitionObserver.observe(document.body, {childList: true, subtree: true});
  }
  apply();
}""" % STYLE_ID


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)  # the issue asks for the median of 5
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="the app's STEERING_PRECISION: fp32 shows what a CPU without bf16 would get")
    args = ap.parse_args()
    env = {"STEERING_MODEL": "embedded", "STEERING_PRECISION": args.precision}
    with serve_app(env) as url, browser_page() as page:
        page.goto(url + "/steer?feature=630&alpha=20&seed=1")
        page.get_by_text("‖resid‖ at layer 15").wait_for()
        wait_idle(page)
        gen, rel, gen_s, with_transitions = [], [], [], []
        thumb = page.get_by_role("slider", name="α")
        for i in range(2 * args.repeats):
            shipped = i % 4 in (0, 3)  # S T T S: each variant releases to both ends of the slider
            page.evaluate(_SWITCH, not shipped)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Generate").click()
            page.wait_for_timeout(200)
            _finished(page)
            if shipped:
                gen.append(time.perf_counter() - t0)
            thumb.focus()
            t0 = time.perf_counter()
            thumb.press("End" if i % 2 == 0 else "Home")
            page.get_by_text("from cache").first.wait_for(timeout=300_000)
            started = time.perf_counter() - t0
            _finished(page)
            took = time.perf_counter() - t0
            if not shipped:
                with_transitions.append(took)
                log(f"run {i}: release with transitions {took:.2f} s")
                continue
            rel.append(took)
            server = page.get_by_text(re.compile(r"Finished: \d+ decoding steps in")).first.inner_text()
            gen_s.append(float(re.search(r"in ([\d.]+) s", server).group(1)))
            log(f"run {i}: generate {gen[-1]:.2f} s, release {rel[-1]:.2f} s (rerun showed after {started:.2f} s; "
                f"the page generated for {gen_s[-1]:.1f} s)")
        emit("steer_release_s", statistics.median(rel), "s", runs=[round(x, 2) for x in rel], precision=args.precision)
        emit("steer_release_with_transitions_s", statistics.median(with_transitions), "s",
             runs=[round(x, 2) for x in with_transitions])
        emit("transitions_over_none", statistics.median(with_transitions) / statistics.median(rel), "ratio")
        emit("steer_release_generation_s", statistics.median(gen_s), "s", runs=gen_s)
        emit("steer_generate_s", statistics.median(gen), "s", runs=[round(x, 2) for x in gen])
        page.goto(url + "/features")
        page.get_by_role("heading", name="Features").first.wait_for()
        page.get_by_text("Feature id", exact=True).first.click()
        query = page.get_by_role("textbox", name="Query")
        opens = []
        for fid in (630, 12, 2049, 77, 1500)[: max(args.repeats, 1)]:
            t0 = time.perf_counter()
            query.fill(str(fid))
            query.press("Enter")
            page.get_by_role("heading", name=re.compile(rf"#{fid} ·")).first.wait_for(timeout=120_000)
            opens.append(time.perf_counter() - t0)
            wait_idle(page)
        emit("feature_card_open_s", statistics.median(opens), "s", runs=[round(x, 2) for x in opens])


if __name__ == "__main__":
    main()
