"""No CSS transitions in the app.

Why: on a 2-core laptop the browser and the model share the cores, and a headless or software-
rendered browser repaints every frame of a transition. While the Steer page generates, Streamlit
fades the not-yet-redrawn elements (an opacity transition on each), slides the progress bar and
fades the slider's ticks. Measured in headless Chromium on a 2-core AMD EPYC, alternating within
one run: a live α release took 3.40 s with them and 2.93 s without (medians of 4), and the
browser's CPU time during a release fell from 0.8–1.0 to 0.55–0.65 s; ``python -m bench.pages``
gave 2.37 against 2.16 s (docs/design.md §Live α in the browser). Nothing is lost: elements still
dim and the bar still moves, at once instead of over a fraction of a second.
"""

from __future__ import annotations

import streamlit as st

#: The id of the style element, so a benchmark can switch it off to measure what it saves.
STYLE_ID = "steering-no-transitions"
CSS = "*, *::before, *::after { transition: none !important; }"


def without_transitions() -> None:
    """Switch off CSS transitions for this page (a style-only ``st.html`` takes no room on it)."""
    st.html(f'<style id="{STYLE_ID}">{CSS}</style>')
