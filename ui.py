"""Streamlit glue shared by app.py and pages/: one model per process, the picker, error display,
the shared feature-list component, and the hand-offs from one page to another.

No maths here: everything is a call into ``steering_core``. A page that opens another page with
something filled in calls :func:`goto_steer`, :func:`goto_sweep` or :func:`goto_features`; those
are the only code outside a page that writes that page's widget state, and the choices they set
(:class:`SteerSource`, :class:`SweepSource`, :class:`SweepGrid`) are declared once, here.
"""

from __future__ import annotations

import atexit
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, Sequence

import streamlit as st

from steering_core import SteeringCoreError, load_model
from steering_core.model.loading import cache_dir
from steering_core.model.saes import load_sae

#: Every page of the app: (file, title, one-line description). app.py routes to these in order.
PAGES = [
    ("pages/home.py", "Home", "Model, SAE, hook point and residual norms."),
    ("pages/steer.py", "Steer", "Live α slider: steered and unsteered completions side by side."),
    ("pages/dataset_editor.py", "Datasets", "Contrastive pairs: edit, generate from templates or stories, import, split."),
    ("pages/vectors.py", "Vectors", "Fit vectors with every method, keep a library, ask what a vector does, sweeps."),
    ("pages/sweep.py", "Sweep", "Behaviour × coherence over α, the automatic α, and the next-token view."),
    ("pages/features.py", "Features", "Search SAE features; cards with effects, actions, cosine- and effect-similar lists; compare; map."),
]


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
    """The feature pack that goes with the current SAE (the shipped one for the embedded model),
    or None. Packs are read-only, so one open handle serves every session."""
    from steering_core.pack.reader import default_pack_dir

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
    sidebar_links()
    model_picker()


def md_escape(text: str) -> str:
    """User text shown literally inside markdown (labels can hold *, _, <, # …)."""
    import re

    return re.sub(r"([\\`*_{}\[\]()<>#+!|~])", r"\\\1", str(text))


def fmt(v) -> str:
    """Numbers to 3 significant digits, everything else as is (for metric lists)."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


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


def rows_frame(rows):
    import pandas as pd

    return pd.DataFrame([{"feature": r.feature_id, "value": r.value, "relative": r.rel_value, "label": r.label,
                          "density": r.density, "predicted": r.predicted} for r in rows],
                        columns=["feature", "value", "relative", "label", "density", "predicted"])


def feature_list(title: str, rows, key: str, selected: int | None = None, on_open=None) -> None:
    """A ranked feature list with inline bars (the browser's list component, shared by every page
    that lists features). A click calls ``on_open(feature_id)``; ``selected`` is highlighted."""
    from steering_core.browse.export import rows_to_csv, rows_to_json

    df = rows_frame(rows)
    if df.empty:
        st.caption(f"{title}: nothing to show (no rows, or every row filtered out).")
        return
    if df["predicted"].any():
        st.caption("Predicted by the effect approximator, not measured.")
    vmax = float(df["value"].abs().max()) or 1.0
    if selected is not None and selected in set(df["feature"]):
        rank = int(df.index[df["feature"] == selected][0]) + 1
        st.caption(f"★ #{selected} is in this list (rank {rank})")
    shown = df.drop(columns=["predicted"] + [c for c in ("relative", "density", "label") if df[c].isna().all()])
    styled = shown.style.apply(
        lambda r: ["background-color: #ffe08a" if r["feature"] == selected else "" for _ in r], axis=1)
    event = st.dataframe(
        styled, key=key, on_select="rerun", selection_mode="single-row", hide_index=True, height=260,
        column_order=[c for c in ("feature", "value", "label", "relative", "density") if c in shown],
        column_config={  # narrow lists (three across) still show id, label and value without scrolling
            "feature": st.column_config.NumberColumn("feature", width="small", format="%d"),
            "label": st.column_config.TextColumn("label", width="medium"),
            "value": st.column_config.ProgressColumn("value", min_value=-vmax if (df["value"] < 0).any() else 0.0,
                                                     max_value=vmax, format="%.3f", width="small"),
            "relative": st.column_config.NumberColumn("relative", format="%.2f"),
            "density": st.column_config.NumberColumn("density", format="%.4f"),
        },
    )
    picked = event.selection.rows if event and event.selection else []
    if picked and on_open is not None:
        fid = int(df.iloc[picked[0]]["feature"])
        if fid != st.session_state.get(f"{key}_last"):
            st.session_state[f"{key}_last"] = fid
            on_open(fid)
            st.rerun()
    c1, c2 = st.columns(2)
    c1.download_button("CSV", rows_to_csv(rows), f"{key}.csv", "text/csv", key=f"{key}_csv")
    c2.download_button("JSON", rows_to_json(rows), f"{key}.json", "application/json", key=f"{key}_json")


# -- page hand-offs ------------------------------------------------------------------------------------
# Each page owns its widgets' session-state keys; these functions are the only writers from outside.
# They set the keys and switch page; the target page applies them before drawing any widget.


class SteerSource(StrEnum):
    """Where the Steer page's vector comes from. The values are the labels its radio shows (and what
    a saved preset stores), so a choice is named by member, never by copying a label."""

    RANDOM = "Random unit vector"
    SAE_FEATURE = "SAE feature (decoder row)"
    UPLOAD = "Upload (.safetensors / .npy / .pt)"
    SAVED = "Saved vector (Vectors page)"


class SweepSource(StrEnum):
    """What the Sweep page sweeps (values: its radio's labels)."""

    SAVED = "Saved vector"
    SAE_FEATURE = "SAE feature (decoder row)"


class SweepGrid(StrEnum):
    """How the Sweep page chooses its α grid (values: its radio's labels)."""

    AUTO = "Around the automatic α"
    MANUAL = "Manual"


#: Feature cards pinned on the Features page at most (newest first; older ones drop off).
MAX_PINS = 8


def _page(title: str) -> str:
    return next(path for path, t, _ in PAGES if t == title)


def pin_feature(fid: int) -> int:
    """Pin a feature's card on the Features page (newest first) and make it the selected feature,
    without leaving the current page."""
    fid = int(fid)
    ss = st.session_state
    pins = [p for p in ss.get("pins", []) if p != fid]
    ss.pins = [fid] + pins[: MAX_PINS - 1]
    ss.selected = fid
    return fid


def goto_features(feature: int) -> NoReturn:
    """Open the Features page with this feature's card pinned first and selected."""
    pin_feature(feature)
    st.switch_page(_page("Features"))


def _one_vector(feature: int | None, vector: str | None) -> None:
    if (feature is None) == (vector is None):
        raise ValueError("Hand over exactly one of feature= (an SAE feature id) or vector= (a saved vector name).")


def first_value(key: str, value: Any, arg: str = "value") -> dict[str, Any]:
    """Widget keyword arguments that give ``value`` as a widget's first value, unless session state
    already holds one for ``key`` (a hand-off or a preset put it there). Passing both makes
    Streamlit warn, and a value put in session state alone can be lost when the page's first run
    is interrupted, so the default travels with the widget call. ``arg`` is ``"index"`` for radios."""
    return {} if key in st.session_state else {arg: value}


def _set_vector(prefix: str, sources, feature: int | None, vector: str | None) -> None:
    """Point a page's vector picker (session keys ``<prefix>_source``, ``<prefix>_feature`` and
    the saved-vector key) at a feature or a saved vector; exactly one of them is given."""
    _one_vector(feature, vector)
    ss = st.session_state
    if feature is not None:
        ss[f"{prefix}_source"], ss[f"{prefix}_feature"] = sources.SAE_FEATURE, str(int(feature))
    else:
        ss[f"{prefix}_source"], ss[_SAVED_KEY[prefix]] = sources.SAVED, str(vector)


#: The session key of each page's saved-vector picker (Steer: ``vec_saved``, Sweep: ``sw_vector``).
_SAVED_KEY = {"vec": "vec_saved", "sw": "sw_vector"}


def goto_steer(*, feature: int | None = None, vector: str | None = None, layer: int | None = None,
               alpha: float | None = None) -> NoReturn:
    """Open the Steer page set to steer with an SAE feature's decoder row (``feature``) or a saved
    vector (``vector``, its name), at ``layer`` and ``alpha`` when given. The page clamps both
    to its sliders' ranges; a later hand-off replaces everything an earlier one set."""
    ss = st.session_state
    _set_vector("vec", SteerSource, feature, vector)
    if layer is not None:
        ss.layer = int(layer)
    if alpha is not None:
        ss.pending_alpha = float(alpha)
    st.switch_page(_page("Steer"))


def goto_sweep(*, feature: int | None = None, vector: str | None = None,
               alphas: Sequence[float] | None = None) -> NoReturn:
    """Open the Sweep page on an SAE feature (``feature``) or a saved vector (``vector``); with
    ``alphas``, a manual grid of those values instead of the grid around the automatic α."""
    ss = st.session_state
    _set_vector("sw", SweepSource, feature, vector)
    if alphas is not None:
        ss.sw_mode, ss.sw_grid = SweepGrid.MANUAL, ", ".join(f"{float(a):.1f}" for a in alphas)
    st.switch_page(_page("Sweep"))


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
