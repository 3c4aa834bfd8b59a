"""The four ranked lists on a feature card, and the registry of list kinds the pages draw from.

For one feature of a pack (the EffectVis card of [Chalnev 2024] §6, and what its authors wished
for; docs/design.md §Feature effects), each list has the same row type and filters
(:mod:`~steering_core.browse.rows`):

* **effects**: what steering with the feature does to the other features (measured; predicted by
  the pack's effect approximator only when nothing was measured, and marked so);
* **actions**: which features' steering raises this one most (the transpose view);
* **cosine-similar**: features whose decoder rows point the same way;
* **effect-similar**: features whose steering *does* the same thing (cosine of effect vectors).

:data:`LIST_KINDS` names them once, with the title and one-line description a page shows, so a
page lists whatever is registered instead of keeping its own copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from steering_core.browse.rows import (
    REL_EPS,
    ExploreError,
    ListFilter,
    ListRow,
    check_filter,
    check_k,
    feature_table,
    filter_rows,
    with_user_labels,
)
from steering_core.pack.reader import FeaturePack

if TYPE_CHECKING:  # pragma: no cover
    from steering_core.browse.usernotes import UserNotes


def _label(row_label: str | None, auto: str | None) -> str:
    return row_label or auto or ""


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
    return as_raw_prediction(pack, approx.predict(torch.from_numpy(row)[None]).numpy()[0].astype(np.float64))


def as_raw_prediction(pack: FeaturePack, pred: np.ndarray) -> np.ndarray:
    """Approximator output on the raw basis: a pack whose approximator was fitted on specific
    effects (``meta.approximator_basis``) predicts raw − generic, so the generic response is added
    back (every list starts from raw values and subtracts it again when asked for specific)."""
    generic = pack.generic_arrays()
    if pack.meta.get("approximator_basis") == "specific" and generic is not None:
        return pred + generic[0][: len(pred)]
    return pred


def rank_predicted(pred: np.ndarray, baseline: np.ndarray, density: np.ndarray, flt: ListFilter, k: int,
                   labels: Callable[[int], str], se: np.ndarray | None = None,
                   hubs: np.ndarray | None = None) -> list[ListRow]:
    """Effects over all targets (predicted, or a vector's measurement with its ``se``) as list
    rows: filtered over *all* targets, then the ``k`` largest |effect| (ties by feature id), so a
    filter never empties a list that has allowed rows."""
    n = len(pred)
    base = np.full(n, np.nan)
    m = min(n, len(baseline))
    base[:m] = baseline[:m]
    rel = pred / (base + REL_EPS)
    dens = np.full(n, np.nan)
    m = min(n, len(density))
    dens[:m] = density[:m]
    hub = None
    if hubs is not None:
        hub = np.zeros(n, bool)
        hub[: min(n, len(hubs))] = np.asarray(hubs[:n], bool)
    ok = flt.mask(pred, rel, dens, se, hub)
    idx = np.nonzero(ok)[0]
    order = idx[np.lexsort((idx, -np.abs(pred[idx])))][:k]
    return [ListRow(int(t), float(pred[t]), None if math.isnan(rel[t]) else float(rel[t]), labels(int(t)),
                    None if math.isnan(dens[t]) else float(dens[t]), predicted=True,
                    se=None if se is None or not math.isfinite(se[t]) else float(se[t]),
                    hub=bool(hubs[t]) if hubs is not None and t < len(hubs) else False) for t in order]


def rank_cosine(pack: FeaturePack, cos: np.ndarray, flt: ListFilter, k: int) -> list[ListRow]:
    """Cosines over all features as list rows: filtered, then the ``k`` highest (ties by id);
    NaN entries never appear."""
    ft = feature_table(pack)
    dens = np.full(len(cos), np.nan)
    m = min(len(cos), len(ft.density))
    dens[:m] = ft.density[:m]
    ok = flt.mask(cos, np.full(len(cos), np.nan), dens)
    idx = np.nonzero(ok)[0]
    order = idx[np.lexsort((idx, -cos[idx]))][:k]
    return [ListRow(int(o), float(cos[o]), None, ft.label_of(int(o)), None if math.isnan(dens[o]) else float(dens[o]))
            for o in order]


def effects_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                 notes: "UserNotes | None" = None) -> list[ListRow]:
    """Effects of steering with this feature, largest |effect| first. Measured where the pack
    measured the feature; otherwise predicted by the approximator (``predicted=True``), so a
    dead or skipped feature still gets a list and is never mistaken for a measured one."""
    fid = pack.check_feature(feature_id)
    flt, k = check_filter(flt), check_k(k)
    raw = pack.effect_rows(fid, flt.basis)
    if raw:
        rows = [ListRow(int(t), float(e), None if r is None else float(r), _label(lab, auto), d,
                        se=None if se is None else float(se), hub=bool(hub))
                for t, e, r, lab, auto, d, se, hub in raw]
        return with_user_labels(pack, filter_rows(rows, flt, k), notes)
    if pack.is_measured(fid):
        return []  # measured, and nothing was stored for it (or no specific effects): an honest empty list
    ft = feature_table(pack)
    pred, generic = predicted_effects(pack, fid), pack.generic_arrays()
    if flt.basis == "specific" and generic is not None:
        pred = pred - generic[0][: len(pred)]
    rows = rank_predicted(pred, ft.baseline, ft.density, flt, k, ft.label_of,
                          hubs=None if generic is None else generic[2])
    return with_user_labels(pack, rows, notes)


def actions_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                 notes: "UserNotes | None" = None) -> list[ListRow]:
    """The features whose steering raises this one most (value: their measured raw or specific
    effect on it, per ``flt.basis``; relative to this feature's baseline activation)."""
    fid = pack.check_feature(feature_id)
    flt, k = check_filter(flt), check_k(k)
    base = feature_table(pack).baseline[fid]
    kind = "action_specific" if flt.basis == "specific" else "action"
    rows = [ListRow(int(o), float(v), None if math.isnan(base) else float(v) / (float(base) + REL_EPS),
                    _label(lab, auto), d, se=None if se is None else float(se))
            for o, v, lab, auto, d, se in pack.neighbor_rows(kind, fid)]
    return with_user_labels(pack, filter_rows(rows, flt, k), notes)


def cosine_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                notes: "UserNotes | None" = None) -> list[ListRow]:
    """Features whose decoder rows point the same way (cosine, highest first). A pack stores these
    for live features only; for the others they are computed here from the SAE decoder."""
    fid = pack.check_feature(feature_id)
    flt, k = check_filter(flt), check_k(k)
    raw = pack.neighbor_rows("cosine", fid)
    if raw:
        rows = [ListRow(int(o), float(v), None, _label(lab, auto), d) for o, v, lab, auto, d, _se in raw]
        return with_user_labels(pack, filter_rows(rows, flt, k), notes)
    if not (pack.sae_dir / "sae_weights.safetensors").is_file():
        return []
    w = pack.decoder_matrix()
    if fid >= w.shape[0]:
        return []
    cos = (w @ w[fid]).astype(np.float64)
    cos[fid] = np.nan  # a feature is not its own neighbour
    return with_user_labels(pack, rank_cosine(pack, cos, flt, k), notes)


def effect_similar_list(pack: FeaturePack, feature_id, flt: ListFilter | None = None, k: int = 64,
                        notes: "UserNotes | None" = None) -> list[ListRow]:
    """Features whose measured effect vectors point the same way as this one's (cosine of effect
    vectors, highest first). Empty for features whose effects were not measured."""
    fid = pack.check_feature(feature_id)
    flt, k = check_filter(flt), check_k(k)
    rows = [ListRow(int(o), float(v), None, _label(lab, auto), d)
            for o, v, lab, auto, d, _se in pack.neighbor_rows("effect_similar", fid)]
    return with_user_labels(pack, filter_rows(rows, flt, k), notes)


@dataclass(frozen=True)
class ListKind:
    """One kind of ranked list: its registry name, the title and one-line description a page shows
    above it, and the function that answers it, ``fetch(pack, feature_id, flt, k, notes)``."""

    name: str
    title: str
    about: str
    fetch: Callable[..., list[ListRow]]


#: Every list a feature card shows, in the order a card shows them.
LIST_KINDS: dict[str, ListKind] = {kind.name: kind for kind in (
    ListKind("effects", "Effects", "what steering with this feature does", effects_list),
    ListKind("actions", "Actions", "features whose steering raises this one most", actions_list),
    ListKind("cosine", "Cosine-similar", "decoder directions pointing the same way", cosine_list),
    ListKind("effect_similar", "Effect-similar", "features whose effects look the same", effect_similar_list),
)}


__all__ = [
    "LIST_KINDS", "ListKind", "actions_list", "as_raw_prediction", "cosine_list", "effect_similar_list", "effects_list",
    "predicted_effects", "rank_cosine", "rank_predicted",
]
