"""Shareable links: the Steer and Sweep pages' settings as query parameters, and back.

Why in the library: a link is user input from anywhere (a chat message, an old bookmark, a hand
edit), so reading it is validation with plain sentences, the same for every page. A link never
raises: each value that cannot be used is ignored with a sentence saying why, and the rest is
applied. The pages write their current settings back into the address, so the address bar is
always a link to what is on screen.

    /steer?feature=630&alpha=76.4&layer=15&seed=3&prompt=…      (or vector=<saved name>)
    /sweep?feature=630&grid=0,20,40,80&keywords=wedding,party&prompts=…&samples=4&tokens=32&seed=0
    /vectors?vector=<saved name>                                  (its "What does it do?" tab)
    /dataset_editor?dataset=<saved name>   or   ?example=<shipped example>
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

from steering_core.measure.sweep import MAX_SAMPLES, MAX_TOKENS, SweepError, parse_grid

#: The most characters a linked prompt (or the Sweep page's prompt lines together) may hold.
MAX_LINK_PROMPT = 4000


def _int(text: str) -> int:
    value = float(text)  # "3", "3.0", "1e2"; "abc", "nan", "inf" fail below
    if not value.is_integer():
        raise ValueError
    return int(value)


class _Reader:
    """One link's parameters: typed reads that record a sentence for each unusable value."""

    def __init__(self, params: Mapping[str, Any] | Any):
        self.params = params if hasattr(params, "get") else {}
        self.warnings: list[str] = []

    def raw(self, key: str) -> str | None:
        value = self.params.get(key)
        if isinstance(value, (list, tuple)):
            value = value[-1] if value else None
        return None if value is None else str(value)

    def text(self, key: str) -> str | None:
        value = self.raw(key)
        return None if value is None else value.strip()

    def bad(self, key: str, value: str, why: str) -> None:
        shown = value if len(value) <= 40 else value[:40] + "…"
        self.warnings.append(f"The link's {key}={shown!r} was ignored: {why}")

    def whole(self, key: str, why: str, lo: int | None = None, hi: int | None = None,
              range_why: str | None = None) -> int | None:
        """A whole number (``why`` when it is not one), within ``lo..hi`` when given (``range_why``
        when it is outside, else ``why``); None when unset or unusable."""
        text = self.text(key)
        if text is None:
            return None
        try:
            value = _int(text)
        except (ValueError, OverflowError):
            self.bad(key, text, why)
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.bad(key, text, range_why or why)
            return None
        return value

    def number(self, key: str, why: str) -> float | None:
        text = self.text(key)
        if text is None:
            return None
        try:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        except ValueError:
            self.bad(key, text, why)
            return None

    def feature(self, n_features: int | None) -> int | None:
        text = self.text("feature")
        if text is None or (fid := self.whole("feature", "a feature id is a whole number, 0 or more.", lo=0)) is None:
            return None
        if n_features is None:
            self.bad("feature", text, "no SAE is loaded, so there are no features to steer with.")
        elif fid >= n_features:
            self.bad("feature", text, f"the SAE has features 0 to {n_features - 1}.")
        else:
            return fid
        return None

    def vector(self, has_feature: bool, names: Iterable[str] | None) -> str | None:
        text = self.text("vector")
        if text is None:
            return None
        if has_feature:
            self.bad("vector", text, "a link names a feature or a saved vector, not both (the feature is used).")
        elif not text:
            self.bad("vector", text, "it names no vector.")
        elif names is not None and text not in list(names):
            self.bad("vector", text, "there is no saved vector by that name.")
        else:
            return text
        return None

    def choice(self, key: str, names: Iterable[str] | None, why: str) -> str | None:
        """A name that must be one of ``names`` (``why`` when it is not; None: any name)."""
        text = self.text(key)
        if text is None:
            return None
        if not text:
            self.bad(key, text, "it names nothing.")
        elif names is not None and text not in list(names):
            self.bad(key, text, why)
        else:
            return text
        return None

    def long_text(self, key: str, what: str) -> str | None:
        """Free text kept as written (a prompt); refused when empty or longer than MAX_LINK_PROMPT."""
        raw = self.raw(key)
        if raw is None:
            return None
        if not raw.strip():
            self.bad(key, raw, f"the link's {what} is empty, so the page keeps its own.")
        elif len(raw) > MAX_LINK_PROMPT:
            self.bad(key, raw, f"a linked {what} holds at most {MAX_LINK_PROMPT} characters.")
        else:
            return raw
        return None

    def seed(self) -> int | None:
        return self.whole("seed", "a seed is a whole number, 0 or more.", lo=0, hi=2**63 - 1)

    def unknown(self, known: Iterable[str]) -> None:
        """A sentence for each parameter the page does not read: a mistyped ``alhpa=50`` in a shared
        link would otherwise leave the reader believing α was set."""
        self.warnings += unknown_parameters(self.params, known)


#: Query parameters Streamlit itself reads (embedding); never reported as unknown.
STREAMLIT_PARAMS = frozenset({"embed", "embed_options"})


def unknown_parameters(params: Mapping[str, Any] | Any, known: Iterable[str]) -> list[str]:
    """One sentence per query parameter of ``params`` that is not in ``known`` (nor Streamlit's own)."""
    keys = list(params.keys()) if hasattr(params, "keys") else []
    known = list(known)
    takes = ", ".join(known)
    return [f"The link's {str(k)[:40]!r} was ignored: this page's links take {takes}."
            for k in keys if k not in known and k not in STREAMLIT_PARAMS]


class _Link:
    """What every link dataclass shares: writing itself back as query parameters."""

    def params(self) -> dict[str, str]:
        """The query parameters that reproduce these settings, in field order (floats kept short,
        tuples comma-separated, unset and empty fields left out)."""
        return _params(self)


def _params(link: Any) -> dict[str, str]:
    out = {}
    for f in fields(link):
        value = getattr(link, f.name)
        if value is None or (isinstance(value, str) and not value.strip()):  # empty text links nothing
            continue
        if isinstance(value, tuple):
            out[f.name] = ",".join(f"{v:g}" for v in value)
        else:
            out[f.name] = f"{value:g}" if isinstance(value, float) else str(value)
    return out


# -- Steer ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteerLink(_Link):
    """Settings read from a Steer link; a field is None when the link does not set it."""

    feature: int | None = None
    vector: str | None = None
    layer: int | None = None
    alpha: float | None = None
    seed: int | None = None
    prompt: str | None = None


#: The query parameters a Steer link may carry, in the order a link writes them.
LINK_KEYS = tuple(f.name for f in fields(SteerLink))


def parse_steer_link(params, *, n_layers: int, n_features: int | None = None,
                     vector_names=None) -> tuple[SteerLink, list[str]]:
    """Read a Steer link's query parameters (a mapping of str, or list of str) into a
    :class:`SteerLink` and one plain sentence per value that cannot be used (that value is
    ignored). ``n_features`` is the loaded SAE's width (None: no SAE); ``vector_names`` the saved
    vectors' names (None: not checked). Never raises for what a link holds."""
    r = _Reader(params)
    feature = r.feature(n_features)
    vector = r.vector(feature is not None, vector_names)
    layer = r.whole("layer", "a layer is a whole number.", lo=0, hi=n_layers - 1,
                    range_why=f"this model's layers are 0 to {n_layers - 1}.")
    alpha = r.number("alpha", "α is a finite number such as 49.4.")
    link = SteerLink(feature, vector, layer, alpha, r.seed(), r.long_text("prompt", "prompt"))
    r.unknown(LINK_KEYS)
    return link, r.warnings


# -- Sweep ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepLink(_Link):
    """Settings read from a Sweep link; a field is None when the link does not set it. ``grid`` is
    a manual α grid (without one the page sweeps around the automatic α); ``prompts`` holds one
    prompt per line; ``keywords`` and ``concept`` switch their scores on."""

    feature: int | None = None
    vector: str | None = None
    grid: tuple[float, ...] | None = None
    keywords: str | None = None
    concept: str | None = None
    prompts: str | None = None
    samples: int | None = None
    tokens: int | None = None
    seed: int | None = None


def parse_sweep_link(params, *, n_features: int | None = None,
                     vector_names=None) -> tuple[SweepLink, list[str]]:
    """Read a Sweep link's query parameters into a :class:`SweepLink` and one plain sentence per
    value that cannot be used (that value is ignored), as :func:`parse_steer_link` does."""
    r = _Reader(params)
    feature = r.feature(n_features)
    vector = r.vector(feature is not None, vector_names)
    grid = None
    if (text := r.text("grid")) is not None:
        try:
            grid = parse_grid(text)
        except SweepError as exc:
            r.bad("grid", text, str(exc)[0].lower() + str(exc)[1:])
    words = {}
    for key in ("keywords", "concept"):
        if (text := r.text(key)) is not None:
            if text and len(text) <= MAX_LINK_PROMPT:
                words[key] = text
            else:
                r.bad(key, text, f"it is empty or longer than {MAX_LINK_PROMPT} characters.")
    link = SweepLink(feature, vector, grid, words.get("keywords"), words.get("concept"),
                     r.long_text("prompts", "prompt list"),
                     r.whole("samples", f"samples is a whole number from 1 to {MAX_SAMPLES}.", 1, MAX_SAMPLES),
                     r.whole("tokens", f"tokens is a whole number from 1 to {MAX_TOKENS}.", 1, MAX_TOKENS),
                     r.seed())
    r.unknown(f.name for f in fields(SweepLink))
    return link, r.warnings


# -- Vectors -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorsLink(_Link):
    """A Vectors link names one saved vector of the reader's own library; the page opens its
    "What does it do?" tab on it. A colleague without that vector gets a sentence, not an error."""

    vector: str | None = None


def parse_vectors_link(params, *, vector_names=None) -> tuple[VectorsLink, list[str]]:
    """Read a Vectors link's query parameters into a :class:`VectorsLink` and one plain sentence
    per value that cannot be used, as :func:`parse_steer_link` does."""
    r = _Reader(params)
    link = VectorsLink(r.vector(False, vector_names))
    r.unknown(f.name for f in fields(VectorsLink))
    return link, r.warnings


# -- Datasets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetsLink(_Link):
    """A Datasets link opens one dataset: a saved one of the reader's own library (``dataset``), or
    an example that ships with the package (``example``), which every reader has."""

    dataset: str | None = None
    example: str | None = None


def parse_datasets_link(params, *, saved_names=None, example_names=None) -> tuple[DatasetsLink, list[str]]:
    """Read a Datasets link into a :class:`DatasetsLink` and one plain sentence per value that
    cannot be used, as :func:`parse_steer_link` does."""
    r = _Reader(params)
    examples = list(example_names) if example_names is not None else None
    dataset = r.choice("dataset", saved_names, "there is no saved dataset by that name in this library.")
    example = r.choice("example", examples, "there is no such example" + (
        f" (the examples: {', '.join(examples)})." if examples else "."))
    if dataset is not None and example is not None:
        r.bad("example", example, "a link opens one dataset, and the saved one is opened.")
        example = None
    r.unknown(f.name for f in fields(DatasetsLink))
    return DatasetsLink(dataset, example), r.warnings
