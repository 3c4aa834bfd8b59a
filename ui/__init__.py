"""Streamlit glue shared by app.py and pages/: one model per process, the picker, error display,
the shared feature-list component, and the hand-offs from one page to another.

No maths here: everything is a call into ``steering_core``. The page list and the hand-offs from
one page to another (``goto_steer``, ``goto_sweep``, ``goto_features``, links, pins) live in
:mod:`ui.navigation` and are re-exported here, so pages write ``ui.goto_steer(...)``.
"""

from __future__ import annotations

import atexit
import math
import os
from pathlib import Path

import streamlit as st

from steering_core import SteeringCoreError, load_model
from steering_core.model.loading import cache_dir
from steering_core.model.saes import load_sae
from ui.charts import LEGEND_ABOVE, add_band  # noqa: F401  (re-exported for pages)
from ui.flash import flash, show_flashes  # noqa: F401  (re-exported for pages)
from ui.highlight import snippet_html, token_spans, tokens_html  # noqa: F401  (re-exported for pages)
from ui.lists import clickable_table, feature_list, rows_frame  # noqa: F401  (re-exported for pages)
from ui.motion import without_transitions
from ui.navigation import (  # noqa: F401  (re-exported for pages: ui.goto_steer, ui.SteerSource, …)
    MAX_PINS,
    PAGES,
    VECTORS_LINK_TAB,
    SteerSource,
    SweepGrid,
    SweepSource,
    datasets_link,
    feature_from_url,
    first_value,
    goto_features,
    goto_steer,
    goto_sweep,
    pin_feature,
    read_datasets_link,
    read_sweep_link,
    read_vectors_link,
    share_feature_url,
    unpin_feature,
    write_link,
)
from ui.stale import stale_warning  # noqa: F401  (re-exported for pages)
from ui.targets import show_target_features  # noqa: F401  (re-exported for pages)
from ui.words import count  # noqa: F401  (re-exported for pages)


def _release_cached_resources() -> None:
    """Drop what the process-wide caches hold (models, DuckDB connections) before the interpreter
    finalises, so a stopped server ends quietly instead of with a page of nanobind leak warnings."""
    try:
        st.cache_resource.clear()
    except Exception:  # noqa: BLE001 - shutting down: nothing left to tell anyone
        pass


atexit.register(_release_cached_resources)


def default_model_spec() -> str:
    """The model a new session starts with (``STEERING_MODEL``, read per session, not per import)."""
    return os.environ.get("STEERING_MODEL", "embedded")


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
    from steering_core.pack.reader import FeaturePack

    return FeaturePack(path)


def current_pack():
    """The feature pack that goes with the current SAE (the one picked in the sidebar, else the
    shipped one for the embedded model), or None. Packs are read-only, so one open handle serves
    every session."""
    from steering_core.pack.reader import default_pack_dir

    model_spec, sae_spec = _specs()
    d = Path(st.session_state.get("pack_dir") or default_pack_dir())
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
        ss.model_spec = default_model_spec()
        ss.sae_spec = default_sae_spec(ss.model_spec)
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


def _packs_under(root: Path) -> list[Path]:
    """Pack folders (a ``pack.duckdb`` beside ``sae/``) up to three levels under ``root``; folders
    being shipped (``*.tmp``, ``*.old``) are left out."""
    found = []
    for pattern in ("pack.duckdb", "*/pack.duckdb", "*/*/pack.duckdb", "*/*/*/pack.duckdb"):
        for db in sorted(root.glob(pattern)):
            if db.is_file() and not db.parent.name.endswith((".tmp", ".old")):
                found.append(db.parent)
    return found


def _pack_choice(folder: str) -> tuple[str, str, str]:
    """``(model spec, SAE folder, pack folder)`` of the pack in ``folder``, from its own meta table
    (the model spec it was built with); a folder that is not a pack is one sentence."""
    import json

    path = Path(str(folder).strip()).expanduser()
    if not str(folder).strip():
        raise SteeringCoreError("Pick a pack or type the folder that holds its pack.duckdb.")
    if not (path / "pack.duckdb").is_file():
        raise SteeringCoreError(f"{path} is not a feature pack (no pack.duckdb in it).")
    if not (path / "sae" / "cfg.json").is_file():
        raise SteeringCoreError(f"The pack in {path} has no SAE (sae/cfg.json is missing); rebuild or re-ship it.")
    meta = _cached_pack(str(path.resolve())).meta
    try:
        spec = json.loads(meta.get("config", "{}")).get("model") or meta.get("model_id")
    except ValueError:
        spec = meta.get("model_id")
    if not spec:
        raise SteeringCoreError(f"The pack in {path} does not say which model it was built for (meta.model_id).")
    return str(spec), str((path / "sae").resolve()), str(path.resolve())


def model_picker() -> None:
    """Sidebar form: embedded default, a TransformerLens model + sae_lens SAE, a folder, a feature
    pack (any pack under ``cache/`` or a typed folder: its model and SAE), or a tiny demo."""
    model_spec, sae_spec = _specs()
    with st.sidebar.expander("Model and SAE", expanded=False):
        st.caption(f"In use: **{model_spec}**" + (f" · SAE **{sae_spec}**" if sae_spec else " · no SAE"))
        kind = st.radio(
            "Source",
            ["Embedded (offline)", "TransformerLens name", "Hugging Face folder", "Feature pack", "Tiny random (demo)"],
            key="picker_kind",
        )
        name, sae, pack_dir = "", "", ""
        if kind == "TransformerLens name":
            name = st.text_input("Model name", placeholder="gpt2-small", key="picker_tl")
            release = st.text_input("sae_lens release", placeholder="gpt2-small-res-jb", key="picker_rel")
            sae_id = st.text_input("SAE id", placeholder="blocks.8.hook_resid_pre", key="picker_id")
            sae = f"{release.strip()}:{sae_id.strip()}" if release.strip() and sae_id.strip() else ""
        elif kind == "Hugging Face folder":
            name = st.text_input("Folder", placeholder="/path/to/model", key="picker_hf")
            sae = st.text_input("SAE folder (sae_lens format, optional)", key="picker_hf_sae")
        elif kind == "Feature pack":
            packs = [str(p) for p in _packs_under(cache_dir())]
            listed = st.selectbox(f"Packs under {cache_dir()}", packs, index=0 if packs else None,
                                  placeholder="none built yet", key="picker_pack_list")
            typed = st.text_input("…or a pack folder", placeholder="/path/to/pack (holds pack.duckdb and sae/)",
                                  key="picker_pack_path")
            pack_dir = typed.strip() or (listed or "")
        if st.button("Load", key="picker_load"):
            spec = {"Embedded (offline)": "embedded", "Tiny random (demo)": "tiny"}.get(kind)
            try:
                if kind == "Feature pack":
                    spec, sae, pack_dir = _pack_choice(pack_dir)
                elif spec is None:
                    if not name.strip():
                        st.error("Type a model name first.")
                        return
                    spec = ("tl:" if kind == "TransformerLens name" else "hf:") + name.strip()
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
            st.session_state.pack_dir = pack_dir or None  # the pack the Features page should open
            st.success(f"Loaded {model.name}" + (f" with the pack in {pack_dir}." if pack_dir else "."))
            st.rerun()


def show_error(exc: Exception) -> None:
    """A library error shown as a sentence (never a stack trace)."""
    st.error(str(exc))


def page_links() -> None:
    for path, title, help_text in PAGES:
        st.page_link(path, label=f"{title}: {help_text}")


def sidebar_links() -> None:
    """The page list in the sidebar. Drawn by us rather than by st.navigation, because
    Streamlit's own list first flashes the pages/ files under their file names."""
    from streamlit.errors import StreamlitAPIException

    try:
        for path, title, help_text in PAGES:
            st.sidebar.page_link(path, label=title, help=help_text)
    except StreamlitAPIException:
        pass  # a page run on its own (not through app.py's st.navigation) has no pages to link


def setup_page(title: str) -> None:
    st.set_page_config(page_title=f"{title} · steering workbench", layout="wide")
    without_transitions()
    sidebar_links()
    model_picker()


def md_escape(text: str) -> str:
    """User text shown literally inside markdown (labels can hold *, _, <, # …)."""
    import re

    return re.sub(r"([\\`*_{}\[\]()<>#+!|~])", r"\\\1", str(text))


def _library(open_fn):
    """Open one of the user's library files, or stop the page with a sentence. The usual cause is
    a second app or build holding the same cache (DuckDB lets one process write a file); the file
    itself is untouched."""
    import functools

    @functools.wraps(open_fn)
    def opened():
        try:
            return open_fn()
        except SteeringCoreError as exc:
            st.error(f"{exc} Your saved datasets, vectors and labels are safe; this page needs that file.")
            st.stop()
    return opened


@_library
def user_notes():
    """The user's own labels and notes (a separate DuckDB file: the shipped pack stays read-only)."""
    from steering_core.browse.usernotes import open_user_notes

    return open_user_notes()


@st.cache_resource(show_spinner=False)
def _cached_library(path: str):
    """One open Library per file in this process, shared by every session."""
    from steering_core.storage.library import open_library

    return open_library(path)


@_library
def library():
    """The user's library (``cache_dir()/library.duckdb``, vector tensors in ``cache_dir()/vectors``):
    ``.datasets``, ``.vectors``, ``.effects`` (measured vector effects), ``.sweeps`` (sweep points,
    α by α) and ``.presets`` (Steer-page presets), all on one connection."""
    path = str(cache_dir() / "library.duckdb")
    lib = _cached_library(path)
    if lib.closed:  # closed behind the cache's back (a script or test released the file): reopen
        _cached_library.clear(path)
        lib = _cached_library(path)
    return lib


def progress_callback(bar, text: str):
    """An ``on_progress(done, total)`` for library calls that draws on a Streamlit progress bar."""
    def update(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(1, total)), text=f"{text} {done}/{total}")
    return update


def upload_mb(max_bytes: int) -> int:
    """A file uploader's size limit, in Streamlit's whole megabytes, for a library limit in bytes:
    the widget then states the real limit (Streamlit's default says 200 MB) and refuses larger
    files itself; the library still checks, with its own sentence, what the rounding lets in."""
    return max(1, math.ceil(max_bytes / 2**20))
