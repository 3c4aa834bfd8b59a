"""What to measure when sweeping a feature: keywords and a concept from the pack's description of it.

Why: the Sweep page's keyword hit rate and concept similarity are only as good as the words typed
in, and its defaults are wedding words. A researcher sweeping feature #N wants the words #N is
about, and wants to know before sweeping when the pack found its output effect no larger than a
random direction's (then no keyword is likely to rise with α, whatever is typed). And a new
Sweep page needs a first feature worth sweeping (:func:`example_feature`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from steering_core.browse.rows import DEFAULT_MAX_DENSITY, feature_table
from steering_core.describe.labels import NO_OUTPUT_EFFECT, sweep_keywords
from steering_core.pack.reader import FeaturePack


@dataclass(frozen=True)
class SweepSuggestion:
    """Keywords (for the keyword hit rate), a concept (for MiniLM similarity), whether the feature
    steers better than a random direction (None: the pack does not say), and a note to show."""

    feature: int
    keywords: tuple[str, ...]
    concept: str
    steers_well: bool | None
    note: str


def _tokens(value) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return [t for t in (value or []) if isinstance(t, str)]


def sweep_suggestion(pack: FeaturePack, feature_id) -> SweepSuggestion | None:
    """Keywords and a concept for sweeping ``feature_id``, or None when the pack holds no readable
    tokens for it. An invalid id raises the pack's own message."""
    fid = pack.check_feature(feature_id)
    row = pack.feature(fid)
    top = _tokens(row.get("top_tokens"))
    steers = feature_table(pack).steers_well(fid)
    outputs = pack.outputs(fid) or {}
    gains = [t for t, _ in outputs.get("gains", [])]
    words = sweep_keywords(top, gains, steers=bool(steers))
    if not words:
        return None
    concept = ", ".join(sweep_keywords(top, [], steers=False, limit=3))
    if steers is False:
        note = f"#{fid}: {NO_OUTPUT_EFFECT} The keywords are what it fires on; their hit rate may not rise with α."
    elif steers:
        note = f"#{fid} steers better than a random direction; the keywords add the words steering raises."
    else:
        note = f"#{fid}: the keywords are what it fires on (this pack does not say how well it steers)."
    return SweepSuggestion(fid, tuple(words), concept, steers, note)


def example_feature(pack: FeaturePack, max_density: float = DEFAULT_MAX_DENSITY) -> int | None:
    """A feature to open a sweep with when the user has not named one: the one that moves next-token
    probabilities toward its own words the most (highest output score, above random directions'
    bar), not dense, with at least three readable keywords. Without output scores (old or tiny
    packs), the lowest-id feature with three keywords; None when there is none. Why: a first
    sweep of feature 0 with wedding keywords shows a flat curve and teaches nothing."""
    def find() -> int | None:
        table = feature_table(pack)
        score = table.output_score if table.output_score is not None else np.full(len(table.label), np.nan)
        dense = np.nan_to_num(table.density, nan=0.0) > max_density
        order = np.lexsort((np.arange(len(score)), -np.nan_to_num(score, nan=-np.inf)))
        for fid in order[:200]:
            fid = int(fid)
            if dense[fid] or table.steers_well(fid) is False:
                continue
            got = sweep_suggestion(pack, fid)
            if got is not None and len(got.keywords) >= 3:
                return fid
        return None
    return pack.cached(f"suggest:example:{max_density}", find)
