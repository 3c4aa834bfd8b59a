"""The feature browser's library side (EffectVis, document 001 §6, and what its authors wished for).

For one feature of a pack it answers four ranked lists, each with the same row type and the same
filters (minimum |effect|, minimum |relative effect|, hide dense features, sign):

* **effects**: what steering with the feature does to the other features (measured; predicted by
  the pack's effect approximator only when nothing was measured, and marked so);
* **actions**: which features' steering raises this one most (the transpose view);
* **cosine-similar**: features whose decoder rows point the same way;
* **effect-similar**: features whose steering *does* the same thing (cosine of effect vectors).

Around them: search (by id, label substring, meaning of the label, and "what fires here" on a
typed text), the cosine vs effect-similar neighbourhood overlap, the group-growing procedure of
document 001 Appendix E done automatically, and CSV/JSON export.

Maths is pure functions over rows and arrays (:func:`filter_rows`, :func:`jaccard`,
:func:`grow_from`); the pack is read through :class:`~steering_core.pack.reader.FeaturePack`, and
user labels come from :mod:`steering_core.browse.usernotes`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from steering_core.errors import SteeringCoreError
from steering_core.names import unencodable_at
from steering_core.pack.reader import FeaturePack

if TYPE_CHECKING:  # pragma: no cover
    from steering_core.browse.usernotes import UserNotes

#: ε of the relative effect, effect / (baseline activation + ε); the pack stores the same one.
REL_EPS = 1e-2
#: Largest list a caller may ask for (a pack stores its top 64 per feature; predicted and
#: computed lists are cut here).
MAX_K = 10_000
SIGNS = ("any", "positive", "negative")
GROUP_KINDS = ("effect_similar", "cosine")


class ExploreError(SteeringCoreError):
    """A filter, search or request the feature browser cannot answer as asked."""


# ----------------------------------------------------------------------------------------------
# Rows and filters
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListRow:
    """One row of a ranked list on a feature card. ``value`` is the effect, the action's effect on
    the card feature, or the cosine; ``rel_value`` the relative effect where one exists;
    ``predicted`` marks approximator estimates (never mixed with measured rows)."""

    feature_id: int
    value: float
    rel_value: float | None
    label: str
    density: float | None
    predicted: bool = False


def _threshold(name: str, value: Any, optional: bool, upper: float | None = None) -> float | None:
    if value is None:
        if optional:
            return None
        raise ExploreError(f"{name} needs a number.")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ExploreError(f"{name} must be a number, not {value!r}.")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise ExploreError(f"{name} must be a finite number, not {v}.")
    if v < 0:
        raise ExploreError(f"{name} cannot be negative (got {v}); it is compared with absolute values.")
    if upper is not None and v > upper:
        raise ExploreError(f"{name} is a fraction between 0 and {upper:g}; got {v}.")
    return v


@dataclass(frozen=True)
class ListFilter:
    """Filters shared by every list (the ones the SAE-TS authors ran in notebooks).

    * ``min_abs``: keep rows with |value| ≥ this;
    * ``min_rel``: keep rows with |relative effect| ≥ this, where relative effect = effect ÷
      (baseline activation + ε); rows that have no relative effect (cosine lists) are kept only
      while this is ``None``;
    * ``max_density``: hide features active on more than this fraction of tokens (dense
      features show up in every list and say little); rows of unknown density are kept;
    * ``sign``: ``any``, ``positive`` (value > 0) or ``negative`` (value < 0).

    NaN values never pass. Invalid thresholds raise :class:`ExploreError` at construction, so a
    bad filter fails where it was typed rather than as an empty list."""

    min_abs: float = 0.0
    min_rel: float | None = None
    max_density: float | None = None
    sign: str = "any"

    def __post_init__(self):
        object.__setattr__(self, "min_abs", _threshold("Minimum |effect|", self.min_abs, optional=False))
        object.__setattr__(self, "min_rel", _threshold("Minimum |relative effect|", self.min_rel, optional=True))
        object.__setattr__(self, "max_density", _threshold("Density threshold", self.max_density, optional=True,
                                                           upper=1.0))
        if self.sign not in SIGNS:
            raise ExploreError(f"sign must be one of {list(SIGNS)}, not {self.sign!r}.")

    @property
    def is_default(self) -> bool:
        return self == ListFilter()

    def mask(self, values: np.ndarray, rel: np.ndarray, density: np.ndarray) -> np.ndarray:
        """Which rows pass (vectorised; ``rel`` and ``density`` hold NaN where unknown)."""
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v) & (np.abs(v) >= self.min_abs)
        if self.sign == "positive":
            ok &= v > 0
        elif self.sign == "negative":
            ok &= v < 0
        if self.min_rel is not None:
            r = np.asarray(rel, dtype=np.float64)
            ok &= np.isfinite(r) & (np.abs(np.nan_to_num(r, nan=0.0)) >= self.min_rel)
        if self.max_density is not None:
            d = np.asarray(density, dtype=np.float64)
            ok &= ~(np.nan_to_num(d, nan=-1.0) > self.max_density)
        return ok

    def allows(self, row: ListRow) -> bool:
        return bool(self.mask(*_row_arrays([row]))[0])


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _row_arrays(rows: Sequence[ListRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r.value for r in rows], np.float64), np.array([_nan(r.rel_value) for r in rows], np.float64),
            np.array([_nan(r.density) for r in rows], np.float64))


def filter_rows(rows: Sequence[ListRow], flt: ListFilter, k: int) -> list[ListRow]:
    """The first ``k`` rows (in their ranked order) that the filter allows."""
    if not rows:
        return []
    keep = flt.mask(*_row_arrays(rows))
    return [r for r, ok in zip(rows, keep) if ok][:k]


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ExploreError(f"{name} must be a whole number, not {k!r}.")
    if not 1 <= int(k) <= MAX_K:
        raise ExploreError(f"{name} must be between 1 and {MAX_K}; got {k}.")
    return int(k)


def _check_filter(flt: Any) -> ListFilter:
    if flt is None:
        return ListFilter()
    if not isinstance(flt, ListFilter):
        raise ExploreError(f"Filters must be a ListFilter, not {type(flt).__name__}.")
    return flt


# ----------------------------------------------------------------------------------------------
# Pack-wide arrays (loaded once per pack)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FeatureTable:
    label: list[str]
    density: np.ndarray  # NaN where unknown
    baseline: np.ndarray  # NaN where unknown

    def label_of(self, fid: int) -> str:
        return self.label[fid] if 0 <= fid < len(self.label) else ""


def _features(pack: FeaturePack) -> _FeatureTable:
    def load() -> _FeatureTable:
        n = pack.n_features
        labels = [""] * n
        dens = np.full(n, np.nan)
        base = np.full(n, np.nan)
        for fid, label, auto, d, b in pack.feature_columns(["feature_id", "label", "auto_label", "density",
                                                            "baseline_act"]):
            if 0 <= fid < n:
                labels[fid] = label or auto or ""
                dens[fid] = _nan(d)
                base[fid] = _nan(b)
        file_base = pack.cached_baseline()
        if file_base is not None and np.isnan(base).any():
            m = min(n, len(file_base))
            fill = np.isnan(base[:m])
            base[:m][fill] = np.asarray(file_base, np.float64)[:m][fill]
        return _FeatureTable(labels, dens, base)
    return pack.cached("explore:features", load)


def _with_user_labels(pack: FeaturePack, rows: list, notes: "UserNotes | None") -> list:
    """Rows whose label the user rewrote get the user's label (rows are frozen: replaced)."""
    if notes is None or not rows:
        return rows
    mine = notes.labels(pack, [r.feature_id for r in rows])
    return [dataclasses.replace(r, label=mine[r.feature_id]) if r.feature_id in mine else r for r in rows]


def _label(row_label: str | None, auto: str | None) -> str:
    return row_label or auto or ""


# ----------------------------------------------------------------------------------------------
# The four lists
# ----------------------------------------------------------------------------------------------


def predicted_effects(pack: FeaturePack, feature_id) -> np.ndarray:
    """The approximator's estimate of the effects of steering with this feature's decoder
    direction, ``[d_sae]`` (the approximator unit-normalises, as it was fitted on unit vectors)."""
    import torch

    fid = pack.check_feature(feature_id)
    approx = pack.approximator()
    if approx is None:
        raise ExploreError(f"Feature {fid} has no measured effects, and this pack has no effect approximator "
                           "to predict them.")
    row = pack.decoder_row(fid)
    if row.shape[0] != approx.M.shape[0]:
        raise ExploreError(f"The pack's approximator reads vectors of size {approx.M.shape[0]} but its SAE decoder "
                           f"rows have size {row.shape[0]}; the pack is inconsistent, rebuild it.")
    return approx.predict(torch.from_numpy(row)[None]).numpy()[0].astype(np.float64)


def rank_predicted(pred: np.ndarray, baseline: np.ndarray, density: np.ndarray, flt: ListFilter, k: int,
                   labels: Callable[[int], str]) -> list[ListRow]:
    """Predicted effects as list rows: filtered over *all* targets, then the ``k`` largest |effect|
    (ties by feature id), so a filter never empties a list that has allowed rows."""
    n = len(pred)
    base = np.full(n, np.nan)
    m = min(n, len(baseline))
    base[:m] = baseline[:m]
    rel = pred / (base + REL_EPS)
    dens = np.full(n, np.nan)
    m = min(n, len(density))
    dens[:m] = density[:m]
    ok = flt.mask(pred, rel, dens)
    idx = np.nonzero(ok)[0]
    order = idx[np.lexsort((idx, -np.abs(pred[idx])))][:k]
    return [ListRow(int(t), float(pred[t]), None if math.isnan(rel[t]) else float(rel[t]), labels(int(t)),
                    None if math.isnan(dens[t]) else float(dens[t]), predicted=True) for t in order]


def effects_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                 notes: "UserNotes | None" = None) -> list[ListRow]:
    """Effects of steering with this feature, largest |effect| first. Measured where the pack
    measured the feature; otherwise predicted by the approximator (``predicted=True``), so a
    dead or skipped feature still gets a list and is never mistaken for a measured one."""
    fid = pack.check_feature(feature_id)
    flt, k = _check_filter(flt), _check_k(k)
    raw = pack.effect_rows(fid)
    if raw:
        rows = [ListRow(int(t), float(e), None if r is None else float(r), _label(lab, auto), d)
                for t, e, r, lab, auto, d in raw]
        return _with_user_labels(pack, filter_rows(rows, flt, k), notes)
    if pack.is_measured(fid):
        return []  # measured, and nothing was stored for it: an honest empty list
    ft = _features(pack)
    rows = rank_predicted(predicted_effects(pack, fid), ft.baseline, ft.density, flt, k, ft.label_of)
    return _with_user_labels(pack, rows, notes)


def actions_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                 notes: "UserNotes | None" = None) -> list[ListRow]:
    """The features whose steering raises this one most (value: their measured effect on it;
    relative to this feature's baseline activation)."""
    fid = pack.check_feature(feature_id)
    flt, k = _check_filter(flt), _check_k(k)
    base = _features(pack).baseline[fid]
    rows = [ListRow(int(o), float(v), None if math.isnan(base) else float(v) / (float(base) + REL_EPS),
                    _label(lab, auto), d) for o, v, lab, auto, d in pack.neighbor_rows("action", fid)]
    return _with_user_labels(pack, filter_rows(rows, flt, k), notes)


def cosine_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                notes: "UserNotes | None" = None) -> list[ListRow]:
    """Features whose decoder rows point the same way (cosine, highest first). A pack stores these
    for live features only; for the others they are computed here from the SAE decoder."""
    fid = pack.check_feature(feature_id)
    flt, k = _check_filter(flt), _check_k(k)
    raw = pack.neighbor_rows("cosine", fid)
    if raw:
        rows = [ListRow(int(o), float(v), None, _label(lab, auto), d) for o, v, lab, auto, d in raw]
        return _with_user_labels(pack, filter_rows(rows, flt, k), notes)
    if not (pack.sae_dir / "sae_weights.safetensors").is_file():
        return []
    w = pack.decoder_matrix()
    if fid >= w.shape[0]:
        return []
    cos = (w @ w[fid]).astype(np.float64)
    cos[fid] = np.nan  # a feature is not its own neighbour
    return _with_user_labels(pack, rank_cosine(pack, cos, flt, k), notes)


def rank_cosine(pack: FeaturePack, cos: np.ndarray, flt: ListFilter, k: int) -> list[ListRow]:
    """Cosines over all features as list rows: filtered, then the ``k`` highest (ties by id);
    NaN entries never appear."""
    ft = _features(pack)
    dens = np.full(len(cos), np.nan)
    m = min(len(cos), len(ft.density))
    dens[:m] = ft.density[:m]
    ok = flt.mask(cos, np.full(len(cos), np.nan), dens)
    idx = np.nonzero(ok)[0]
    order = idx[np.lexsort((idx, -cos[idx]))][:k]
    return [ListRow(int(o), float(cos[o]), None, ft.label_of(int(o)), None if math.isnan(dens[o]) else float(dens[o]))
            for o in order]


def effect_similar_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                        notes: "UserNotes | None" = None) -> list[ListRow]:
    """Features whose measured effect vectors point the same way as this one's (cosine of effect
    vectors, highest first). Empty for features whose effects were not measured."""
    fid = pack.check_feature(feature_id)
    flt, k = _check_filter(flt), _check_k(k)
    rows = [ListRow(int(o), float(v), None, _label(lab, auto), d)
            for o, v, lab, auto, d in pack.neighbor_rows("effect_similar", fid)]
    return _with_user_labels(pack, filter_rows(rows, flt, k), notes)


LISTS: dict[str, Callable[..., list[ListRow]]] = {
    "effects": effects_list, "actions": actions_list, "cosine": cosine_list, "effect_similar": effect_similar_list,
}


# ----------------------------------------------------------------------------------------------
# Search
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    """A feature found by a search. ``score`` is the cosine for semantic search, else ``None``;
    ``matched`` says which text matched (``id``, ``label``, ``auto_label``, ``user_label``,
    ``semantic``)."""

    feature_id: int
    label: str
    density: float | None
    score: float | None = None
    matched: str = "label"


def _query_text(text: Any, what: str) -> str:
    if text is None or not isinstance(text, str):
        raise ExploreError(f"Type {what} to search for.")
    q = text.strip()
    if not q:
        raise ExploreError(f"Type {what} to search for; the search box is empty.")
    if unencodable_at(q) is not None:
        raise ExploreError("The search contains a character that cannot be encoded (an unpaired surrogate, at "
                           f"position {unencodable_at(q)}); remove it.")
    if len(q) > 2000:
        raise ExploreError(f"Searches are at most 2,000 characters; this one has {len(q):,}.")
    return q


def _hit(pack: FeaturePack, fid: int, matched: str, score: float | None) -> SearchHit:
    ft = _features(pack)
    d = ft.density[fid] if fid < len(ft.density) else float("nan")
    return SearchHit(fid, ft.label_of(fid), None if math.isnan(d) else float(d), score, matched)


def search_id(pack: FeaturePack, text: Any, notes: "UserNotes | None" = None) -> SearchHit:
    """The feature with this id (``"12"``, ``" 12 "`` and ``"#12"`` all work); a sentence for
    anything else."""
    if text is None or isinstance(text, str):
        q = _query_text(text, "a feature id")
        fid = pack.check_feature(q[1:] if q.startswith("#") else q)
    else:
        fid = pack.check_feature(text)  # ints pass; bools, floats and the rest get its sentence
    return _with_user_labels(pack, [_hit(pack, fid, "id", None)], notes)[0]


def match_rank(query: str, text: str | None) -> tuple[int, int] | None:
    """How well ``text`` matches a lower-cased ``query``: (0 exact, 1 prefix, 2 word start,
    3 inside; position), or ``None`` for no match. Lower is better."""
    if not text:
        return None
    t = text.lower()
    pos = t.find(query)
    if pos < 0:
        return None
    if t == query:
        return (0, 0)
    if pos == 0:
        return (1, 0)
    if not t[pos - 1].isalnum():
        return (2, pos)
    return (3, pos)


def search_label(pack: FeaturePack, text: Any, k: int = 50, notes: "UserNotes | None" = None) -> list[SearchHit]:
    """Features whose label, auto label or (with ``notes``) the user's own label contains the
    text, case-insensitively; best matches first (exact, prefix, word start, anywhere), ties by
    id. Empty when nothing matches."""
    q = _query_text(text, "part of a label").lower()
    k = _check_k(k)
    best: dict[int, tuple[tuple[int, int], str]] = {}

    def offer(fid: int, label: str | None, how: str) -> None:
        r = match_rank(q, label)
        if r is not None and (fid not in best or r < best[fid][0]):
            best[fid] = (r, how)

    for fid, label, auto, _d in pack.label_matches(q):
        offer(int(fid), label, "label")
        offer(int(fid), auto, "auto_label")
    if notes is not None:
        for fid, label in notes.labels(pack).items():
            if 0 <= fid < pack.n_features:
                offer(fid, label, "user_label")
    order = sorted(best, key=lambda f: (best[f][0], f))[:k]
    hits = [_hit(pack, f, best[f][1], None) for f in order]
    return _with_user_labels(pack, hits, notes)


def semantic_search(pack: FeaturePack, text: Any, k: int = 20, notes: "UserNotes | None" = None,
                    embed: Callable[[list[str]], np.ndarray] | None = None) -> list[SearchHit]:
    """Features whose labels *mean* something close to the query: cosine between MiniLM
    embeddings of the query and of each label (the pack stores the label embeddings; the user's
    own labels, if ``notes`` is given, are embedded here and a feature scores its better label).
    ``embed`` replaces the encoder (tests, other encoders)."""
    q = _query_text(text, "a description")
    k = _check_k(k)
    ids, emb = pack.label_embedding_matrix()
    if embed is None:
        from steering_core.model.embeddings import embed_texts as embed
    mine = notes.labels(pack) if notes is not None else {}
    if len(ids) == 0 and not mine:
        raise ExploreError("This pack has no label embeddings, so it cannot search by meaning; search by label "
                           "text instead, or rebuild the pack.")
    qv = np.asarray(embed([q]), np.float32)[0]
    qv = qv / max(float(np.linalg.norm(qv)), 1e-12)
    scores = np.full(pack.n_features, -np.inf)
    if len(ids):
        if emb.shape[1] != qv.shape[0]:
            raise ExploreError(f"The pack's label embeddings have {emb.shape[1]} dimensions but the query encoder "
                               f"gives {qv.shape[0]}; they come from different encoders. Rebuild the pack.")
        keep = (ids >= 0) & (ids < pack.n_features)
        scores[ids[keep]] = emb[keep] @ qv
    if mine:
        fids = [f for f in mine if 0 <= f < pack.n_features]
        if fids:
            ue = np.asarray(embed([mine[f] for f in fids]), np.float32)
            ue = ue / np.maximum(np.linalg.norm(ue, axis=1, keepdims=True), 1e-12)
            scores[fids] = np.maximum(scores[fids], ue @ qv)
    valid = np.nonzero(np.isfinite(scores))[0]
    order = valid[np.lexsort((valid, -scores[valid]))][:k]
    hits = [_hit(pack, int(f), "semantic", float(scores[f])) for f in order]
    return _with_user_labels(pack, hits, notes)


@dataclass(frozen=True)
class Firing:
    """One feature active on one token."""

    feature_id: int
    activation: float
    label: str = ""


@dataclass(frozen=True)
class TokenFeatures:
    """A token of the typed text and the features that fire most on it (strongest first)."""

    position: int
    token_id: int
    token: str
    features: tuple[Firing, ...]


def top_per_token(feats: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row of ``[tokens, d_sae]`` activations, the ``k`` largest positive ones as
    ``(feature, activation)``, strongest first, ties by id."""
    out = []
    for row in np.asarray(feats, dtype=np.float64):
        idx = np.nonzero(row > 0)[0]
        order = idx[np.lexsort((idx, -row[idx]))][:k]
        out.append([(int(i), float(row[i])) for i in order])
    return out


def what_fires_here(model, sae, layer: int | None, text: Any, k: int = 5, pack: FeaturePack | None = None,
                    notes: "UserNotes | None" = None) -> list[TokenFeatures]:
    """Run the text through the model (unsteered), encode the residual after the SAE's block,
    and list the top-``k`` active features of every token. ``layer`` must be the block the SAE
    reads (``None``: the SAE's own); with ``pack`` the features carry their labels."""
    from steering_core.model.steering import record_residuals

    if not isinstance(text, str) or not text.strip():
        raise ExploreError("Type some text to see which features fire on it.")
    if len(text) > 20_000:
        raise ExploreError(f"That text is too long ({len(text):,} characters); paste at most 20,000.")
    k = _check_k(k)
    layer = sae.layer if layer is None else layer
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or int(layer) != sae.layer:
        raise ExploreError(f"The SAE reads the output of block {sae.layer} ({sae.hook_name}); its features mean "
                           f"nothing at layer {layer!r}.")
    ids, mask = model.tokenize([text])
    if ids.shape[1] > model.n_ctx:
        raise ExploreError(f"That text is {ids.shape[1]} tokens; {model.name} reads at most {model.n_ctx}.")
    acts = record_residuals(model, ids, mask, [int(layer)])[int(layer)][0]  # [pos, d_model]
    keep = mask[0].bool()
    feats = sae.encode(acts[keep].float()).float().cpu().numpy()
    tok_ids = ids[0][keep].tolist()
    labels = _features(pack).label_of if pack is not None else (lambda _f: "")
    mine = notes.labels(pack) if (pack is not None and notes is not None) else {}
    out = []
    for pos, (tid, top) in enumerate(zip(tok_ids, top_per_token(feats, k))):
        token = model.tokenizer.decode([int(tid)], skip_special_tokens=False)
        out.append(TokenFeatures(pos, int(tid), token,
                                 tuple(Firing(f, a, mine.get(f) or labels(f)) for f, a in top)))
    return out


# ----------------------------------------------------------------------------------------------
# Neighbourhoods and groups (document 001 Appendix E)
# ----------------------------------------------------------------------------------------------


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B| (0.0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 0.0


@dataclass(frozen=True)
class Labelled:
    feature_id: int
    label: str


@dataclass(frozen=True)
class Neighbourhoods:
    """A feature's cosine-similar and effect-similar neighbours and how much they overlap."""

    feature_id: int
    cosine: list[ListRow]
    effect_similar: list[ListRow]
    both: list[Labelled]
    cosine_only: list[Labelled]
    effect_only: list[Labelled]
    jaccard: float


def _split(a: Sequence[int], b: Sequence[int], label: Callable[[int], str]):
    sb, sa = set(b), set(a)
    both = [Labelled(f, label(f)) for f in a if f in sb]
    return both, [Labelled(f, label(f)) for f in a if f not in sb], [Labelled(f, label(f)) for f in b if f not in sa]


def _labeller(pack: FeaturePack, notes: "UserNotes | None", ids: Iterable[int]) -> Callable[[int], str]:
    ft = _features(pack)
    mine = notes.labels(pack, sorted(set(ids))) if notes is not None else {}
    return lambda f: mine.get(f) or ft.label_of(f)


def neighbourhoods(pack: FeaturePack, feature_id, k: int = 16, flt: ListFilter | None = None,
                   notes: "UserNotes | None" = None) -> Neighbourhoods:
    """The top-``k`` cosine-similar and effect-similar features, their intersection and Jaccard
    index: how far "points the same way" and "does the same thing" agree for this feature."""
    fid = pack.check_feature(feature_id)
    cos = cosine_list(pack, fid, flt, k, notes)
    eff = effect_similar_list(pack, fid, flt, k, notes)
    a, b = [r.feature_id for r in cos], [r.feature_id for r in eff]
    both, cos_only, eff_only = _split(a, b, _labeller(pack, notes, a + b))
    return Neighbourhoods(fid, cos, eff, both, cos_only, eff_only, jaccard(a, b))


@dataclass(frozen=True)
class GroupMember:
    """A member of a grown group: when it joined (step 0 is the seed), which earlier member it is
    most similar to (``via``), and its summed similarity to the members that listed it."""

    feature_id: int
    label: str
    step: int
    via: int | None
    score: float


def grow_from(seed: int, neighbours: Callable[[int], Sequence[tuple[int, float]]], size: int,
              per_step: int) -> list[tuple[int, int, int | None, float]]:
    """Appendix E's procedure as a pure function. Start from ``seed``; at each step every current
    member offers its positively similar neighbours, a candidate scores the sum of its
    similarities to the members that list it (so features close to many members win, which keeps
    the group on one theme rather than drifting down a chain), and the ``per_step`` best
    candidates join (ties: larger single similarity, then lower id). Stops at ``size`` members
    or when no candidate is left. Returns ``(feature, step, via, score)`` in joining order."""
    members: list[tuple[int, int, int | None, float]] = [(seed, 0, None, 0.0)]
    inside = {seed}
    cache: dict[int, Sequence[tuple[int, float]]] = {}
    step = 0
    while len(members) < size:
        step += 1
        score: dict[int, float] = {}
        best: dict[int, tuple[float, int]] = {}  # candidate -> (largest similarity, member offering it)
        for m, *_ in members:
            if m not in cache:
                cache[m] = neighbours(m)
            for c, v in cache[m]:
                if c in inside or not v > 0:
                    continue
                score[c] = score.get(c, 0.0) + float(v)
                if c not in best or v > best[c][0]:
                    best[c] = (float(v), m)
        if not score:
            break
        ranked = sorted(score, key=lambda c: (-score[c], -best[c][0], c))
        for c in ranked[: min(per_step, size - len(members))]:
            members.append((c, step, best[c][1], score[c]))
            inside.add(c)
    return members


def grow_group(pack: FeaturePack, feature_id, kind: str, size: int = 12, per_step: int = 2, fanout: int = 8,
               flt: ListFilter | None = None, notes: "UserNotes | None" = None) -> list[GroupMember]:
    """Grow a group of related features from one feature by repeatedly adding the features most
    similar to the current members, by ``kind``: ``effect_similar`` (what the SAE-TS authors
    found thematically tighter) or ``cosine`` (decoder directions). Each member's top ``fanout``
    neighbours (after ``flt``, e.g. hiding dense features) are its candidates."""
    fid = pack.check_feature(feature_id)
    if kind not in GROUP_KINDS:
        raise ExploreError(f"Groups grow by {' or '.join(GROUP_KINDS)}, not {kind!r}.")
    size, per_step, fanout = _check_k(size, "Group size"), _check_k(per_step, "Features per step"), \
        _check_k(fanout, "Neighbours per member")
    flt = _check_filter(flt)
    listing = effect_similar_list if kind == "effect_similar" else cosine_list

    def neighbours(m: int) -> list[tuple[int, float]]:
        return [(r.feature_id, r.value) for r in listing(pack, m, flt, fanout)]

    grown = grow_from(fid, neighbours, size, per_step)
    label = _labeller(pack, notes, [g[0] for g in grown])
    return [GroupMember(f, label(f), s, via, sc) for f, s, via, sc in grown]


@dataclass(frozen=True)
class GroupComparison:
    """Appendix E's table: the group grown by effect similarity, the one grown by decoder cosine,
    and which members they share."""

    feature_id: int
    effect_group: list[GroupMember]
    cosine_group: list[GroupMember]
    both: list[Labelled]
    effect_only: list[Labelled]
    cosine_only: list[Labelled]
    jaccard: float


def compare_groups(pack: FeaturePack, feature_id, size: int = 12, per_step: int = 2, fanout: int = 8,
                   flt: ListFilter | None = None, notes: "UserNotes | None" = None) -> GroupComparison:
    """Grow both groups from the same feature and compare them (the seed is in both)."""
    fid = pack.check_feature(feature_id)
    eff = grow_group(pack, fid, "effect_similar", size, per_step, fanout, flt, notes)
    cos = grow_group(pack, fid, "cosine", size, per_step, fanout, flt, notes)
    a, b = [m.feature_id for m in eff], [m.feature_id for m in cos]
    both, eff_only, cos_only = _split(a, b, _labeller(pack, notes, a + b))
    return GroupComparison(fid, eff, cos, both, eff_only, cos_only, jaccard(a, b))


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


def _as_dict(row: Any) -> dict:
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    if isinstance(row, dict):
        return dict(row)
    raise ExploreError(f"Only list rows can be exported, not {type(row).__name__}.")


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN/inf
    if isinstance(x, (np.floating,)):
        return _jsonable(float(x))
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def rows_to_json(rows: Sequence[Any]) -> str:
    """A list as a JSON array of objects (NaN becomes null, so any JSON reader accepts it)."""
    return json.dumps([_jsonable(_as_dict(r)) for r in rows], ensure_ascii=False, indent=1)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(_jsonable(v), ensure_ascii=False)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v  # a label such as "=cmd|..." must not run as a spreadsheet formula
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def rows_to_csv(rows: Sequence[Any]) -> str:
    """A list as CSV with a header row (the row type's fields; :class:`ListRow` when empty).
    Text cells that a spreadsheet would run as a formula get a leading apostrophe."""
    dicts = [_as_dict(r) for r in rows]
    cols = list(dicts[0]) if dicts else [f.name for f in dataclasses.fields(ListRow)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for d in dicts:
        w.writerow([_csv_cell(d.get(c)) for c in cols])
    return buf.getvalue()


__all__ = [
    "ExploreError", "Firing", "GroupComparison", "GroupMember", "LISTS", "Labelled", "ListFilter", "ListRow",
    "Neighbourhoods", "REL_EPS", "SearchHit", "TokenFeatures", "actions_list", "compare_groups", "cosine_list",
    "effect_similar_list", "effects_list", "filter_rows", "grow_from", "grow_group", "jaccard", "match_rank",
    "neighbourhoods", "predicted_effects", "rank_predicted", "rows_to_csv", "rows_to_json", "search_id",
    "search_label", "semantic_search", "top_per_token", "what_fires_here",
]
