"""Tables of measured numbers. Streamlit draws a missing cell as a grey "None", which beside a ±
reads as "no error" when it means the error is unknown, and in an α column as if None were a
value; a missing cell here shows "—", and the caption under the table says what "—" means."""

from __future__ import annotations

import pandas as pd
import streamlit as st

MISSING = "—"


def number_table(df: pd.DataFrame, formats: dict[str, str], **column_config) -> None:
    """Draw ``df`` with printf-style ``formats`` per column ("%.3f"). A column without a missing
    cell stays numeric (it sorts as numbers); one with a missing cell is shown as text, right-aligned."""
    shown, config = display_frame(df, formats)
    st.dataframe(shown, hide_index=True, width="stretch", column_config={**config, **column_config})


def display_frame(df: pd.DataFrame, formats: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """``df`` as drawn by :func:`number_table`, and the column configuration that draws it."""
    shown, config = df.copy(), {}
    for col, fmt in formats.items():
        if col not in shown:
            continue
        missing = shown[col].isna()
        if missing.any():
            shown[col] = [MISSING if m else fmt % v for v, m in zip(shown[col], missing)]
            config[col] = st.column_config.TextColumn(col, alignment="right")
        else:
            config[col] = st.column_config.NumberColumn(col, format=fmt)
    return shown, config
