"""The app's pages and the hand-offs between them.

Each page owns its widgets' session-state keys; the functions here are the only writers from
outside a page. A hand-off (:func:`goto_steer`, :func:`goto_sweep`, :func:`goto_features`) sets
the target page's keys and switches page; the target applies them before drawing any widget. The
choices they set (:class:`SteerSource`, :class:`SweepSource`, :class:`SweepGrid`) are declared
once, here, and links (``/features?feature=630``) are read and written here too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NoReturn, Sequence

import streamlit as st

from steering_core import SteeringCoreError

#: Every page of the app: (file, title, one-line description). app.py routes to these in order.
PAGES = [
    ("pages/home.py", "Home", "Model, SAE, hook point and residual norms."),
    ("pages/steer.py", "Steer", "Live α slider: steered and unsteered completions side by side."),
    ("pages/dataset_editor.py", "Datasets", "Contrastive pairs: edit, generate from templates or stories, import, split."),
    ("pages/vectors.py", "Vectors", "Fit vectors with every method, keep a library, ask what a vector does, sweeps."),
    ("pages/sweep.py", "Sweep", "Behaviour × coherence over α, the automatic α, and the next-token view."),
    ("pages/features.py", "Features", "Search SAE features; cards with effects, actions, cosine- and effect-similar lists; compare; map."),
    ("pages/toyworld.py", "Toy world", "Steering with a known answer: every method's accuracy against the number of examples."),
]


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
    without leaving the current page. The one writer of ``selected`` (the feature the Search tab's
    card and box show; only :func:`unpin_feature` clears it)."""
    fid = int(fid)
    ss = st.session_state
    pins = [p for p in ss.get("pins", []) if p != fid]
    ss.pins = [fid] + pins[: MAX_PINS - 1]
    ss.selected = fid
    return fid


def unpin_feature(fid: int) -> None:
    """Take a card off the Features page; if it was the selected feature, the next pin is selected."""
    ss = st.session_state
    ss.pins = [p for p in ss.get("pins", []) if p != int(fid)]
    if ss.get("selected") == int(fid):
        ss.selected = ss.pins[0] if ss.pins else None


def feature_from_url(pack) -> int | None:
    """The feature a link names (``/features?feature=630``), checked against the pack: opened
    (pinned and selected) the first time this session sees it. A bad id is a sentence on the page."""
    from steering_core.measure.links import unknown_parameters

    if "url_unknown_said" not in st.session_state:  # once per session, like the other pages' links
        st.session_state.url_unknown_said = True
        for sentence in unknown_parameters(st.query_params.to_dict(), ["feature"]):
            st.warning(sentence)
    raw = st.query_params.get("feature")
    if raw is None:
        return None
    raw = str(raw).strip()
    try:
        fid = pack.check_feature(raw)
    except SteeringCoreError as exc:
        st.error(f"This link asks for feature {raw!r}, which cannot be opened: {exc}")
        return None
    if st.session_state.get("url_feature") != fid:
        st.session_state.url_feature = fid
        pin_feature(fid)
    return fid


def share_feature_url(fid: int | None) -> None:
    """Put the open feature in the page's address (``?feature=…``), so the URL opens the same card;
    with no card open (None), the address names none either."""
    if fid is None:
        if "feature" in st.query_params:
            del st.query_params["feature"]
        return
    if st.query_params.get("feature") != str(int(fid)):
        st.query_params["feature"] = str(int(fid))
    st.session_state.url_feature = int(fid)


def goto_features(feature: int) -> NoReturn:
    """Open the Features page with this feature's card pinned first and selected."""
    pin_feature(feature)
    st.switch_page(_page("Features"))


def _one_vector(feature: int | None, vector: str | None) -> None:
    if (feature is None) == (vector is None):
        raise ValueError("Hand over exactly one of feature= (an SAE feature id) or vector= (a saved vector name).")


def first_value(key: str, value: Any, arg: str = "value") -> dict[str, Any]:
    """Widget keyword arguments that give a widget its default ``value``, except in the run in
    which code (a hand-off, a preset, a link) has just written ``key`` into session state: then
    that value is the one to show, and passing a default as well makes Streamlit warn. Omitting
    the default in any other run is not safe: a page whose first run was interrupted by a click
    would draw its widgets empty. ``arg`` is ``"index"`` for radios."""
    from streamlit.runtime.state import get_session_state

    return {} if get_session_state().is_new_state_value(key) else {arg: value}


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


def read_sweep_link(n_features: int | None, vector_names: Sequence[str]) -> list[str]:
    """Fill the Sweep page's settings from its address (``/sweep?feature=630&grid=0,20,40&…``), once
    per session, before any of its widgets is drawn; returns the sentences about values the link
    could not use (shown by the page until the next session)."""
    from steering_core.measure.links import parse_sweep_link

    ss = st.session_state
    if "sw_link_read" in ss:
        return ss.get("sw_link_warnings", [])
    ss.sw_link_read = True
    link, ss.sw_link_warnings = parse_sweep_link(st.query_params.to_dict(), n_features=n_features,
                                                 vector_names=vector_names)
    if link.feature is not None or link.vector is not None:
        _set_vector("sw", SweepSource, link.feature, link.vector)
    if link.grid is not None:
        ss.sw_mode, ss.sw_grid = SweepGrid.MANUAL, ", ".join(f"{a:g}" for a in link.grid)
    if link.keywords is not None:
        ss.sw_keywords, ss.sw_use_kw = link.keywords, True
    if link.concept is not None:
        ss.sw_concept, ss.sw_use_sim = link.concept, True
    for key, value in (("sw_prompts", link.prompts), ("sw_samples", link.samples), ("sw_tokens", link.tokens),
                       ("sw_seed", link.seed)):
        if value is not None:
            ss[key] = value
    return ss.sw_link_warnings


def write_link(link) -> None:
    """Make the address the link to what a page shows (a ``measure.links`` link: ``SweepLink``,
    ``VectorsLink``); the address is rewritten only when it differs, which would rerun nothing
    but still adds a history entry."""
    params = link.params()
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


#: The Vectors page's tab a link opens (its analysis of the linked vector).
VECTORS_LINK_TAB = "What does it do?"


def read_vectors_link(vector_names: Sequence[str]) -> tuple[str | None, list[str]]:
    """Select the vector a Vectors link names (``/vectors?vector=NAME``) in the page's selectors,
    once per session, before they are drawn; returns the tab to open first (None: the page's
    first) and the sentences about what the link could not use."""
    from steering_core.measure.links import parse_vectors_link

    ss = st.session_state
    if "vec_link_read" not in ss:
        ss.vec_link_read = True
        link, ss.vec_link_warnings = parse_vectors_link(st.query_params.to_dict(), vector_names=vector_names)
        if link.vector is not None:
            ss.lib_pick = ss.what_pick = link.vector
            ss.vec_link_tab = VECTORS_LINK_TAB
    return ss.get("vec_link_tab"), ss.get("vec_link_warnings", [])



def read_datasets_link(saved: Sequence[str], examples: Sequence[str], choices: tuple[str, str]) -> list[str]:
    """Open the dataset a Datasets link names (``/dataset_editor?dataset=NAME`` or ``?example=NAME``)
    in the page's Open box, once per session, before the box is drawn; ``choices`` is the box's two
    prefixes (saved, example). Returns the sentences about what the link could not use."""
    from steering_core.measure.links import parse_datasets_link

    ss = st.session_state
    if "ds_link_read" not in ss:
        ss.ds_link_read = True
        link, ss.ds_link_warnings = parse_datasets_link(st.query_params.to_dict(), saved_names=saved,
                                                        example_names=examples)
        if link.dataset is not None or link.example is not None:
            ss.ds_open = choices[0] + link.dataset if link.dataset is not None else choices[1] + link.example
            ss.pop("ds_rows", None)  # the page loads what the Open box holds when it has no table
    return ss.get("ds_link_warnings", [])


def datasets_link(choice: str | None, choices: tuple[str, str]):
    """The link to a dataset chosen in the Open box (``"saved: NAME"`` / ``"example: NAME"``;
    anything else, such as a new empty table, links nothing)."""
    from steering_core.measure.links import DatasetsLink

    saved, example = choices
    if choice and choice.startswith(saved):
        return DatasetsLink(dataset=choice[len(saved):])
    if choice and choice.startswith(example):
        return DatasetsLink(example=choice[len(example):])
    return DatasetsLink()
