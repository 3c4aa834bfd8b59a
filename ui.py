"""Streamlit glue shared by app.py and pages/: one model per process, the picker, error display.

No maths here: everything is a call into ``steering_core``.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from steering_core import SteeringCoreError, load_model
from steering_core.models import EMBEDDED_MODEL_ID, cache_dir
from steering_core.saes import load_sae

DEFAULT_MODEL = os.environ.get("STEERING_MODEL", "embedded")

#: Every page of the app: (file, title, one-line description). app.py routes to these in order.
PAGES = [
    ("pages/home.py", "Home", "Model, SAE, hook point and residual norms."),
    ("pages/steer.py", "Steer", "Live α slider: steered and unsteered completions side by side."),
    ("pages/features.py", "Features", "Search SAE features; cards with effects, actions, cosine- and effect-similar lists; compare; map."),
]


def default_sae_spec(model_spec: str) -> str:
    """The SAE that goes with a model when the user has not chosen one."""
    env = os.environ.get("STEERING_SAE")
    if env is not None:
        return env
    if model_spec in ("tiny", "tiny-tl"):
        return "tiny"
    if model_spec == "embedded":
        pack_sae = cache_dir() / "pack" / "sae"
        if (pack_sae / "cfg.json").is_file():
            return str(pack_sae)
    return ""


@st.cache_resource(show_spinner=False, max_entries=2)
def _cached_pack(path: str):
    from steering_core.packreader import FeaturePack

    return FeaturePack(path)


def current_pack():
    """The feature pack that goes with the current SAE (the shipped one for the embedded model),
    or None. Packs are read-only, so one open handle serves every session."""
    from steering_core.packreader import default_pack_dir

    model_spec, sae_spec = _specs()
    d = default_pack_dir()
    if not sae_spec or Path(sae_spec).resolve() != (d / "sae").resolve() or not (d / "pack.duckdb").exists():
        return None
    try:
        return _cached_pack(str(d))
    except SteeringCoreError as exc:
        st.warning(f"Feature pack not opened: {exc}")
        return None


@st.cache_resource(show_spinner=False, max_entries=2)
def _cached_model(spec: str):
    return load_model(spec)


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_sae(spec: str, model_spec: str):
    return load_sae(spec, _cached_model(model_spec))


def _specs() -> tuple[str, str]:
    ss = st.session_state
    if "model_spec" not in ss:
        ss.model_spec = DEFAULT_MODEL
        ss.sae_spec = default_sae_spec(DEFAULT_MODEL)
    return ss.model_spec, ss.get("sae_spec", "")


def current_model():
    """The model this session uses (loaded once per process). Stops the page with a message on failure."""
    model_spec, _ = _specs()
    try:
        with st.spinner(f"Loading {model_spec} (the first load of the embedded model takes ~25 s)…"):
            return _cached_model(model_spec)
    except SteeringCoreError as exc:
        st.error(str(exc))
        if model_spec != "embedded":
            st.session_state.model_spec = "embedded"
            st.session_state.sae_spec = default_sae_spec("embedded")
            st.info("Switched back to the embedded default; reload the page.")
        st.stop()


def current_sae():
    """The SAE this session uses, or None (with a warning when loading failed)."""
    model_spec, sae_spec = _specs()
    if not sae_spec:
        return None
    try:
        return _cached_sae(sae_spec, model_spec)
    except SteeringCoreError as exc:
        st.warning(f"SAE not loaded: {exc}")
        return None


def model_picker() -> None:
    """Sidebar form: embedded default, a TransformerLens model + sae_lens SAE, a folder, or a tiny demo."""
    model_spec, sae_spec = _specs()
    with st.sidebar.expander("Model and SAE", expanded=False):
        st.caption(f"In use: **{model_spec}**" + (f" · SAE **{sae_spec}**" if sae_spec else " · no SAE"))
        kind = st.radio(
            "Source",
            ["Embedded (offline)", "TransformerLens name", "Hugging Face folder", "Tiny random (demo)"],
            key="picker_kind",
        )
        name, sae = "", ""
        if kind == "TransformerLens name":
            name = st.text_input("Model name", placeholder="gpt2-small", key="picker_tl")
            release = st.text_input("sae_lens release", placeholder="gpt2-small-res-jb", key="picker_rel")
            sae_id = st.text_input("SAE id", placeholder="blocks.8.hook_resid_pre", key="picker_id")
            sae = f"{release.strip()}:{sae_id.strip()}" if release.strip() and sae_id.strip() else ""
        elif kind == "Hugging Face folder":
            name = st.text_input("Folder", placeholder="/path/to/model", key="picker_hf")
            sae = st.text_input("SAE folder (sae_lens format, optional)", key="picker_hf_sae")
        if st.button("Load", key="picker_load"):
            spec = {"Embedded (offline)": "embedded", "Tiny random (demo)": "tiny"}.get(kind)
            if spec is None:
                if not name.strip():
                    st.error("Type a model name first.")
                    return
                spec = ("tl:" if kind == "TransformerLens name" else "hf:") + name.strip()
            try:
                with st.spinner(f"Loading {spec}…"):
                    model = _cached_model(spec)
                    sae_choice = sae.strip() or default_sae_spec(spec)
                    if sae_choice:
                        _cached_sae(sae_choice, spec)
            except SteeringCoreError as exc:
                st.error(str(exc))
                st.caption(f"Still using {model_spec}.")
                return
            st.session_state.model_spec = spec
            st.session_state.sae_spec = sae_choice
            st.success(f"Loaded {model.name}.")
            st.rerun()


def show_error(exc: Exception) -> None:
    """A library error shown as a sentence (never a stack trace)."""
    st.error(str(exc))


def page_links() -> None:
    for path, title, help_text in PAGES:
        st.page_link(path, label=f"{title}: {help_text}")


def setup_page(title: str) -> None:
    st.set_page_config(page_title=f"{title} · steering workbench", layout="wide")
    model_picker()


def fmt(v) -> str:
    """Numbers to 3 significant digits, everything else as is (for metric lists)."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def user_notes():
    """The user's own labels and notes (a separate DuckDB file: the shipped pack stays read-only)."""
    from steering_core.usernotes import open_user_notes

    return open_user_notes()
