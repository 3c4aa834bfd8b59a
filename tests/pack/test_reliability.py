"""steering_core.pack.reliability: a median top-10 overlap says what it is a median over, and its spread."""

from __future__ import annotations


def test_overlap_figures_say_what_their_median_is_over_and_its_spread(pack):
    import json

    import numpy as np

    from steering_core.browse.glossary import OVERLAP_FIGURES, overlap_text
    from steering_core.pack.reliability import overlap_spread

    ref = json.loads(pack.meta["reference_features"])
    n, q1, q3 = overlap_spread(pack, "reference_top10_overlap")
    assert n == len(ref) and (q1, q3) == tuple(np.percentile([r["overlap"] for r in ref], [25, 75], method="nearest"))
    stab = json.loads(pack.meta["stability_overlaps"])
    assert overlap_spread(pack, "stability_top10_overlap")[0] == len(stab)
    assert all(overlap_spread(pack, k) is not None for k in OVERLAP_FIGURES)
    assert overlap_spread(pack, "corpus_tokens") is None
    assert overlap_text(8.0, (12, 7.0, 9.25)) == "8 of 10 (median over 12 features; middle half 7–9.25)"
    assert overlap_text(8.0, None) == "8 of 10 (median over features)"
