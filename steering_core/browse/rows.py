"""The row type, filters and pack-wide feature table that every list of the feature browser shares.

Each ranked list (:mod:`~steering_core.browse.lists`), the search results and the vector-effect
lists of :mod:`steering_core.measure.vector_effects` are made of :class:`ListRow` and filtered by
one :class:`ListFilter`, so the pages draw and filter them all the same way. The per-pack
:class:`FeatureTable` (labels, densities, baseline activations) is loaded once per pack and
answers every "label and density of feature f" question without a query per row.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from steering_core.errors import SteeringCoreError
from steering_core.pack.reader import FeaturePack

if TYPE_CHECKING:  # pragma: no cover
    from steering_core.browse.usernotes import UserNotes

#: ε of the relative effect, effect / (baseline activation + ε); the pack stores the same one.
REL_EPS = 1e-2
#: Largest list a caller may ask for (a pack stores its top 64 per feature; predicted and
#: computed lists are cut here).
MAX_K = 10_000
#: The sign filter's choices.
SIGNS = ("any", "positive", "negative")
#: The effect bases a list can show: the paper's raw effect, or the specific effect (raw − the
#: generic response of random directions; docs/design.md §Generic response).
BASES = ("raw", "specific")
#: "Within noise": |effect| < NOISE_Z standard errors.
NOISE_Z = 2.0
#: Density above which "hide dense features" hides a feature: such features fire on a fifth of
#: all tokens or more, show up in every list and say little about any one of them.
DEFAULT_MAX_DENSITY = 0.2


class ExploreError(SteeringCoreError):
    """A filter, search or request the feature browser cannot answer as asked."""


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
    se: float | None = None  # standard error of a measured value
    hub: bool = False  # a target that random directions raise too (docs/design.md §Generic response)

    @property
    def within_noise(self) -> bool:
        """|value| < 2 SE: not distinguishable from zero by this measurement."""
        return self.se is not None and math.isfinite(self.se) and abs(self.value) < NOISE_Z * self.se


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
    """Filters shared by every list (the ones the SAE-TS authors ran in notebooks,
    [Chalnev 2024]; docs/design.md §Feature effects).

    * ``min_abs``: keep rows with |value| ≥ this;
    * ``min_rel``: keep rows with |relative effect| ≥ this, where relative effect = effect ÷
      (baseline activation + ε); rows that have no relative effect (cosine lists) are kept only
      while this is ``None``;
    * ``max_density``: hide features active on more than this fraction of tokens (dense
      features show up in every list and say little); rows of unknown density are kept;
    * ``sign``: ``any``, ``positive`` (value > 0) or ``negative`` (value < 0);
    * ``hide_noise``: hide measured rows within 2 standard errors of zero;
    * ``hide_hubs``: hide hub targets, the few features random directions move as much as any
      feature does (their sign follows the direction, so subtracting the generic response's mean
      does not remove them; docs/design.md §Feature effects);
    * ``basis``: which effect the effect and action lists show, ``raw`` (the paper's) or
      ``specific`` (raw − the generic response); not a filter of rows but a choice of value that
      every list shares, so it travels with the filters.

    NaN values never pass. Invalid thresholds raise :class:`ExploreError` at construction, so a
    bad filter fails where it was typed rather than as an empty list."""

    min_abs: float = 0.0
    min_rel: float | None = None
    max_density: float | None = None
    sign: str = "any"
    hide_noise: bool = False
    basis: str = "raw"
    hide_hubs: bool = False

    def __post_init__(self):
        object.__setattr__(self, "min_abs", _threshold("Minimum |effect|", self.min_abs, optional=False))
        object.__setattr__(self, "min_rel", _threshold("Minimum |relative effect|", self.min_rel, optional=True))
        object.__setattr__(self, "max_density", _threshold("Density threshold", self.max_density, optional=True,
                                                           upper=1.0))
        if self.sign not in SIGNS:
            raise ExploreError(f"sign must be one of {list(SIGNS)}, not {self.sign!r}.")
        if self.basis not in BASES:
            raise ExploreError(f"basis must be one of {list(BASES)}, not {self.basis!r}.")
        if not isinstance(self.hide_noise, bool):
            raise ExploreError(f"hide_noise must be true or false, not {self.hide_noise!r}.")
        if not isinstance(self.hide_hubs, bool):
            raise ExploreError(f"hide_hubs must be true or false, not {self.hide_hubs!r}.")

    @property
    def is_default(self) -> bool:
        return self == ListFilter()

    def mask(self, values: np.ndarray, rel: np.ndarray, density: np.ndarray,
             se: np.ndarray | None = None, hub: np.ndarray | None = None) -> np.ndarray:
        """Which rows pass (vectorised; ``rel``, ``density`` and ``se`` hold NaN where unknown;
        ``hub`` is a boolean per row, absent where the list has no hub flags)."""
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v) & (np.abs(v) >= self.min_abs)
        if self.hide_hubs and hub is not None:
            ok &= ~np.asarray(hub, dtype=bool)
        if self.hide_noise and se is not None:
            e = np.asarray(se, dtype=np.float64)
            ok &= ~(np.isfinite(e) & (np.abs(v) < NOISE_Z * np.nan_to_num(e, nan=0.0)))
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


def nan_if_none(x: float | None) -> float:
    """``None`` as NaN, so unknown numbers fit in float arrays."""
    return float("nan") if x is None else float(x)


def _row_arrays(rows: Sequence[ListRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r.value for r in rows], np.float64),
            np.array([nan_if_none(r.rel_value) for r in rows], np.float64),
            np.array([nan_if_none(r.density) for r in rows], np.float64),
            np.array([nan_if_none(r.se) for r in rows], np.float64),
            np.array([bool(r.hub) for r in rows], bool))


def filter_rows(rows: Sequence[ListRow], flt: ListFilter, k: int) -> list[ListRow]:
    """The first ``k`` rows (in their ranked order) that the filter allows."""
    if not rows:
        return []
    keep = flt.mask(*_row_arrays(rows))
    return [r for r, ok in zip(rows, keep) if ok][:k]


def check_k(k: Any, name: str = "k") -> int:
    """A list length or count as typed by a caller, checked: a whole number from 1 to :data:`MAX_K`
    (a sentence otherwise, never a silently empty or huge list)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ExploreError(f"{name} must be a whole number, not {k!r}.")
    if not 1 <= int(k) <= MAX_K:
        raise ExploreError(f"{name} must be between 1 and {MAX_K}; got {k}.")
    return int(k)


def check_filter(flt: Any) -> ListFilter:
    """``None`` (no filtering) or a :class:`ListFilter`; anything else is a sentence."""
    if flt is None:
        return ListFilter()
    if not isinstance(flt, ListFilter):
        raise ExploreError(f"Filters must be a ListFilter, not {type(flt).__name__}.")
    return flt


@dataclass(frozen=True)
class Baseline:
    """A feature's baseline activation: its mean unsteered activation over the effect rollouts'
    generated tokens, what every effect is a change from. ``se`` is one standard error (None for a
    pack that did not keep its rollouts), ``rollouts`` how many it averages."""

    value: float
    se: float | None
    rollouts: int | None


def baseline_activation(pack: FeaturePack, feature_id) -> Baseline | None:
    """The card's baseline activation with its uncertainty; None where the pack has none."""
    return feature_table(pack).baseline_of(pack.check_feature(feature_id))


def sink_note(pack: FeaturePack, feature: dict) -> str | None:
    """A sentence for a feature that fires mostly on attention sinks (``pack.sinks``): its label,
    histogram and top snippets then describe a few outsized positions, not a meaning, and a
    researcher should know before reading them. None for other features and for packs built
    before sinks were measured."""
    share = feature.get("sink_share")
    bar = pack.meta_json("sink_feature_share", 0.5)
    if share is None or (isinstance(share, float) and math.isnan(share)) or share <= bar:
        return None
    tokens, factor = pack.meta_json("sink_tokens"), pack.meta_json("sink_factor")
    where = (f"the {tokens:,} attention-sink tokens of the pack corpus (residual norm over {factor:g}× the median)"
             if isinstance(tokens, int) and isinstance(factor, (int, float)) else "attention-sink tokens")
    pct = f"{share:.0%}" if share < 0.995 else f"{share:.1%}"  # 99.8 %, not a rounded 100 %
    return (f"Fires mostly on attention sinks: {pct} of its activation is on {where}. Its label, "
            "histogram and top snippets describe those few outsized positions, not a meaning of the text.")


@dataclass(frozen=True)
class FeatureTable:
    """Pack-wide per-feature arrays: label (pack label, else auto label), density, baseline
    activation and output score (NaN where unknown), and the steers-well bar of the pack."""

    label: list[str]
    density: np.ndarray
    baseline: np.ndarray
    output_score: np.ndarray | None = None
    steers_well_bar: float | None = None
    max_act: np.ndarray | None = None
    baseline_se: np.ndarray | None = None  # one standard error of each baseline activation
    baseline_rollouts: int | None = None  # how many unsteered rollouts the baselines average

    def baseline_of(self, fid: int) -> Baseline | None:
        b = self.baseline[fid] if 0 <= fid < len(self.baseline) else float("nan")
        if math.isnan(b):
            return None
        se = self.baseline_se[fid] if self.baseline_se is not None and fid < len(self.baseline_se) else float("nan")
        return Baseline(float(b), None if math.isnan(se) else float(se), self.baseline_rollouts)

    def max_act_of(self, fid: int) -> float | None:
        """The feature's largest activation on the pack corpus (the scale of its colours)."""
        if self.max_act is None or not 0 <= fid < len(self.max_act):
            return None
        v = self.max_act[fid]
        return None if math.isnan(v) or v <= 0 else float(v)

    def output_score_of(self, fid: int) -> float | None:
        if self.output_score is None or not 0 <= fid < len(self.output_score):
            return None
        v = self.output_score[fid]
        return None if math.isnan(v) else float(v)

    def steers_well(self, fid: int) -> bool | None:
        """Output score above the pack's bar (random directions' 95th percentile); None if unknown."""
        v = self.output_score_of(fid)
        return None if v is None or self.steers_well_bar is None else v > self.steers_well_bar

    def label_of(self, fid: int) -> str:
        return self.label[fid] if 0 <= fid < len(self.label) else ""

    def density_of(self, fid: int) -> float | None:
        d = self.density[fid] if 0 <= fid < len(self.density) else float("nan")
        return None if math.isnan(d) else float(d)


def feature_table(pack: FeaturePack) -> FeatureTable:
    """The pack's :class:`FeatureTable`, read once per open pack (cached on the pack). Baselines
    missing from the features table are filled from the pack's baseline file."""
    def load() -> FeatureTable:
        n = pack.n_features
        labels = [""] * n
        dens = np.full(n, np.nan)
        base = np.full(n, np.nan)
        score = np.full(n, np.nan)
        top = np.full(n, np.nan)
        for fid, label, auto, d, b, o, m in pack.feature_columns(["feature_id", "label", "auto_label", "density",
                                                                  "baseline_act", "output_score", "max_act"]):
            if 0 <= fid < n:
                top[fid] = nan_if_none(m)
                labels[fid] = label or auto or ""
                dens[fid] = nan_if_none(d)
                base[fid] = nan_if_none(b)
                score[fid] = nan_if_none(o)
        file_base = pack.cached_baseline()
        if file_base is not None and np.isnan(base).any():
            m = min(n, len(file_base))
            fill = np.isnan(base[:m])
            base[:m][fill] = np.asarray(file_base, np.float64)[:m][fill]
        se, rollouts = _baseline_se(pack, n)
        return FeatureTable(labels, dens, base, score, pack.steers_well_bar(), top, se, rollouts)
    return pack.cached("explore:features", load)


def _baseline_se(pack: FeaturePack, n: int) -> tuple[np.ndarray | None, int | None]:
    """Each baseline activation's standard error, from the rollouts the pack kept (within prompts,
    as the effects' SEs are); (None, None) for a pack without them."""
    got = pack.baseline_rows()
    if got is None:
        return None, None
    rows, n_prompts = got
    if rows.ndim != 2 or rows.shape[0] % n_prompts or rows.shape[1] != n:
        return None, None
    import torch

    from steering_core.measure.effects import stratified_mean

    return stratified_mean(torch.from_numpy(np.array(rows, np.float32))[None], n_prompts).se[0].numpy(), rows.shape[0]


def with_user_labels(pack: FeaturePack, rows: list, notes: "UserNotes | None") -> list:
    """Rows whose label the user rewrote get the user's label (rows are frozen: replaced). Works
    on any frozen row type with ``feature_id`` and ``label`` fields."""
    if notes is None or not rows:
        return rows
    mine = notes.labels(pack, [r.feature_id for r in rows])
    return [dataclasses.replace(r, label=mine[r.feature_id]) if r.feature_id in mine else r for r in rows]


__all__ = [
    "DEFAULT_MAX_DENSITY", "ExploreError", "FeatureTable", "ListFilter", "ListRow", "MAX_K", "REL_EPS", "SIGNS",
    "check_filter", "check_k", "feature_table", "filter_rows", "nan_if_none", "with_user_labels",
]
