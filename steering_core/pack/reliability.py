"""How far a pack's reliability figures can be trusted themselves: a median top-10 overlap is over
some number of features, and those features spread around it. The build keeps the per-feature
overlaps in ``meta``; this reads them back for the Home page, with the pack's other summary
figures (:func:`pack_summary`)."""

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


def pack_summary(pack: FeaturePack) -> dict:
    """The numbers a person wants before trusting a pack, by name: the SAE's fit (with SEs), the
    effects budget, the reliability figures and the approximator's R²; None where the pack lacks one.
    The Home page words them through ``browse.glossary.summary_texts``."""
    m = pack.meta_json
    flags = pack.feature_columns(["live", "measured"])
    return {
        "model": pack.meta.get("model_id"), "hook": pack.meta.get("hook_point"), "d_sae": m("d_sae"),
        "live_features": sum(bool(live) for live, _ in flags),
        "measured_features": sum(bool(measured) for _, measured in flags),
        # the typical tokens' figure first: the all-token one mostly measures a few attention sinks
        "explained_variance_typical": m("sae_explained_variance_typical"),
        "explained_variance_typical_se": m("sae_explained_variance_typical_se"),
        "explained_variance": m("sae_explained_variance"), "explained_variance_se": m("sae_explained_variance_se"),
        "massive_tokens": m("sae_massive_tokens"), "massive_variance_share": m("sae_massive_variance_share"),
        "massive_factor": m("sae_massive_factor"), "heldout_tokens": m("sae_heldout_tokens"),
        "delta_ce": m("sae_delta_ce"), "delta_ce_se": m("sae_delta_ce_se"), "mean_l0": m("sae_mean_l0"),
        "dead_fraction": m("dead_fraction_corpus"), "precision": pack.meta.get("precision"),
        "steered_rollouts": m("effects_steered_rollouts"), "reference_rollouts": m("reference_rollouts"),
        "reference_top10_overlap": m("reference_top10_overlap_median"),
        "specific_reference_top10_overlap": m("specific_reference_top10_overlap_median"),
        "stability_top10_overlap": m("stability_median_top10_overlap"),
        "specific_stability_top10_overlap": m("specific_stability_median_top10_overlap"),
        "self_in_top10": m("self_in_top10_share"), "specific_self_in_top10": m("specific_self_in_top10_share"),
        "hub_targets": m("control_hubs"), "sink_features": m("sink_features"), "approximator_r2": m("approximator_r2_heldout"),
        "approximator_r2_se": m("approximator_r2_heldout_se"),
        "corpus_tokens": m("corpus_tokens"), "built": pack.meta.get("build_date"),
    }
