"""Ranked feature lists and clickable feature tables: every list of features on every page is drawn
here, so a click opens a feature the same way everywhere, values carry their ± and greying within
noise, and the bar shows |value| on one scale for both signs."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from steering_core.browse.export import rows_to_csv, rows_to_json


def rows_frame(rows) -> pd.DataFrame:
    """A list's rows as a table, with every column a list can show (empty ones are dropped later)."""
    cols = ["feature", "value", "se", "relative", "label", "density", "predicted", "noise"]
    return pd.DataFrame([{"feature": r.feature_id, "value": r.value, "se": getattr(r, "se", None),
                          "relative": r.rel_value, "density": r.density, "predicted": r.predicted,
                          "label": ("◎ " if getattr(r, "hub", False) else "") + r.label,
                          "noise": bool(getattr(r, "within_noise", False))} for r in rows], columns=cols)


def feature_list(title: str, rows, key: str, selected: int | None = None, on_open=None) -> None:
    """A ranked feature list with inline bars (the browser's list component, shared by every page
    that lists features). A click calls ``on_open(feature_id)``; ``selected`` is highlighted."""
    df = rows_frame(rows)
    if df.empty:
        st.caption(f"{title}: nothing to show (no rows, or every row filtered out).")
        return
    if df["predicted"].any():
        st.caption("Predicted by the effect approximator, not measured.")
    notes = []
    if df["noise"].any():
        notes.append("grey: within 2 SE of zero")
    if df["label"].str.startswith("◎ ").any():
        notes.append("◎ hub: random directions raise it too")
    if notes:
        st.caption(" · ".join(notes))
    vmax = float(df["value"].abs().max()) or 1.0
    if selected is not None and selected in set(df["feature"]):
        rank = int(df.index[df["feature"] == selected][0]) + 1
        st.caption(f"★ #{selected} is in this list (rank {rank})")
    shown = df.drop(columns=["predicted"] + [c for c in ("se", "relative", "density", "label") if df[c].isna().all()])
    # The bar is the size |value| on one scale for both signs (a bar running from −max to +max made
    # −1.66 look smaller than 0.2); the sign is the number beside it, red when negative.
    shown.insert(shown.columns.get_loc("value") + 1, "size", shown["value"].abs())

    def paint(r):
        if r["feature"] == selected:
            return ["background-color: #ffe08a"] * len(r)
        return ["color: #9a9a9a" if r["noise"] else "" for _ in r]  # within noise: greyed, not hidden

    styled = shown.style.apply(paint, axis=1).map(
        lambda v: "color: #c0392b" if v < 0 else "", subset=["value"])
    event = st.dataframe(
        styled, key=key, on_select="rerun", selection_mode="single-row", hide_index=True, height=260,
        column_order=[c for c in ("feature", "value", "se", "size", "label", "relative", "density") if c in shown],
        column_config={  # narrow lists (two across) still show id, value, ±, bar and label without scrolling
            "feature": st.column_config.NumberColumn("feature", width=56, format="%d"),
            "label": st.column_config.TextColumn("label", width="medium"),
            "value": st.column_config.NumberColumn("value", format="%+.3f", width=70),
            "se": st.column_config.NumberColumn("±", format="%.3f", width=52,
                                                help="Standard error of the measured value (paired by prompt)."),
            "size": st.column_config.ProgressColumn("|value|", min_value=0.0, max_value=vmax, format=" ", width=56,
                                                    help="How large the value is, on one scale for both signs."),
            "relative": st.column_config.NumberColumn("relative", format="%.2f"),
            "density": st.column_config.NumberColumn("density", format="%.4f"),
        },
    )
    if on_open is not None:
        _open_once(df, event, key, on_open)
    c1, c2 = st.columns(2)
    c1.download_button("CSV", rows_to_csv(rows), f"{key}.csv", "text/csv", key=f"{key}_csv")
    c2.download_button("JSON", rows_to_json(rows), f"{key}.json", "application/json", key=f"{key}_json")


def clickable_table(df, key: str, on_open, height: int | None = None) -> None:
    """A plain table of features (a ``feature`` column) whose rows open that feature on click, like
    every ranked list; a click is acted on once, not on every rerun. Give a ``key`` that changes
    with the table's content (e.g. names the feature it was made for): a selection kept on a table
    whose rows change would open another feature on every rerun."""
    event = st.dataframe(df, key=key, on_select="rerun", selection_mode="single-row", hide_index=True,
                         **({"height": height} if height else {}))
    _open_once(df, event, key, on_open)


def _open_once(df, event, key: str, on_open: Callable[[int], None]) -> None:
    """Open the clicked row's feature once: Streamlit keeps a table's selection across reruns, so
    acting on every rerun would reopen it after the user moved on."""
    picked = event.selection.rows if event and event.selection else []
    if picked and not df.empty:
        fid = int(df.iloc[picked[0]]["feature"])
        if fid != st.session_state.get(f"{key}_last"):
            st.session_state[f"{key}_last"] = fid
            on_open(fid)
            st.rerun()
