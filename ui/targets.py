"""A dataset's target and off-target SAE features as two labelled tables (Vectors → Data
efficiency): which features a prompt-pair score reads, and how often each fires on either side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from steering_core.browse.rows import feature_table
from steering_core.measure.prompt_pairs import TargetFeatures
from steering_core.pack.reader import FeaturePack


def _labelled(pack: FeaturePack | None, rows: list[dict]) -> pd.DataFrame:
    """``rows`` (each with a ``feature``) with the open pack's label beside each ("" without a pack)."""
    labels = feature_table(pack) if pack is not None else None
    return pd.DataFrame([{**r, "label": labels.label_of(r["feature"]) if labels else ""} for r in rows])


def show_target_features(pack: FeaturePack | None, tf: TargetFeatures) -> None:
    """The target features (with how often they fire on each side) and the off-target ones drawn."""
    st.markdown(f"**Target features** ({len(tf.target)}, from {tf.n_pairs} training pairs at block {tf.sae_layer})")
    if tf.target:
        st.dataframe(_labelled(pack, tf.rows()), hide_index=True, width="stretch")
    else:
        st.caption("None at this threshold: lower the share of positives.")
    st.markdown(f"**Off-target features** ({len(tf.off_target)} drawn from the {tf.n_silent:,} that fire on "
                "neither side)")
    if tf.off_target:
        st.dataframe(_labelled(pack, [{"feature": f} for f in tf.off_target]), hide_index=True, width="stretch",
                     height=200)
