"""How far a pack's reliability figures can be trusted themselves: a median top-10 overlap is over
some number of features, and those features spread around it. The build keeps the per-feature
overlaps in ``meta``; this reads them back for the Home page."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from steering_core.pack.reader import FeaturePack


def overlap_spread(pack: FeaturePack, key: str) -> tuple[int, float, float] | None:
    """For a top-10 overlap figure of ``FeaturePack.summary()`` (``reference_top10_overlap`` …):
    how many features its median is over and their middle half (quartiles), or None when the pack
    did not keep the per-feature overlaps. A median of 8 over 12 features says less than over 50."""
    ref = pack.meta_json("reference_features") or []
    per_feature = {
        "reference_top10_overlap": [r.get("overlap") for r in ref],
        "specific_reference_top10_overlap": [r.get("specific_overlap") for r in ref],
        "stability_top10_overlap": pack.meta_json("stability_overlaps") or [],
        "specific_stability_top10_overlap": pack.meta_json("specific_stability_overlaps") or [],
    }.get(key)
    values = [float(v) for v in per_feature or [] if v is not None]
    if not values:
        return None
    q1, q3 = np.percentile(values, [25, 75], method="nearest")  # overlaps are counts: quartiles that occur
    return len(values), float(q1), float(q3)
