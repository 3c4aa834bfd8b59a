"""The token-position box of the Vectors page's fits: which token of each text a vector is read
from. It starts at the position the chosen dataset suggests, and warns when 'last' would learn the
token every pair shares (a full stop) instead of the behaviour."""

from __future__ import annotations

import streamlit as st

from steering_core import SteeringCoreError
from steering_core.datasets.store import DatasetStore
from steering_core.model.steerable import SteerableModel
from steering_core.vectors.fitting import position_warning, suggested_position


def default_position(model: SteerableModel, datasets: DatasetStore, choice: str, key: str) -> None:
    """Start the position box ``key`` at the dataset's suggested position whenever another dataset is
    chosen (a choice the user makes for one dataset stays until the dataset changes). Call before the box is drawn."""
    ss = st.session_state
    if ss.get(key + "_for") == choice:
        return
    ss[key + "_for"] = choice
    try:
        ss[key], ss[key + "_why"] = suggested_position(model, datasets.open_choice(choice))
    except SteeringCoreError:
        ss[key], ss[key + "_why"] = "last", None  # the fit itself reports a dataset that cannot be read


def position_notes(model: SteerableModel, datasets: DatasetStore, choice: str, key: str, position: str) -> None:
    """Why 'diff' was chosen for this dataset, or a warning that 'last' would learn a token the pairs share."""
    why = st.session_state.get(key + "_why")
    if position == "diff" and why:
        st.caption(f"Position 'diff' (the tokens where each pair differs) was chosen for this dataset: "
                   f"{why}, which 'last' would mostly learn.")
    if position == "last":
        try:
            hint = position_warning(model, datasets.open_choice(choice), position)
        except SteeringCoreError:
            hint = None  # the fit itself reports a dataset that cannot be read
        if hint:
            st.warning(hint)
