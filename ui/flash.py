"""Messages that must survive the rerun a page triggers right after an action (an import, a
preset load): written before ``st.rerun()``, shown once by the next run, then gone."""

from __future__ import annotations

import streamlit as st


def flash(key: str, kind: str, text: str) -> None:
    """Queue ``text`` under ``key``, to be shown by :func:`show_flashes` as ``st.<kind>``."""
    st.session_state.setdefault(key, []).append((kind, text))


def show_flashes(key: str, where=None) -> None:
    """Show (and forget) what was queued under ``key``, in ``where`` (a column or container) or the page."""
    target = st if where is None else where
    for kind, text in st.session_state.pop(key, []):
        getattr(target, kind)(text)
