"""The reliability figures a shipped pack carries in its ``meta`` table, as JSON lines: what the
README's pack table and a closing note quote, read from the pack itself rather than copied by hand.

    python -m bench.pack_reliability [PACK_DIR]     # default: cache/pack

Figures (each only when the pack has it): the reference overlap of the pack's top-10 effects with
a paper-budget re-measurement (raw and specific), the cross-seed stability, the share of features
ranking themselves in their own top 10, the approximator's held-out R², the steers-well bar and
the share of live features above it, the effects stage's seconds per feature, the budget, and the
number of live features without a readable label or description (should be 0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import emit
from steering_core.pack.tables import get_meta
from steering_core.storage.db import connect

ROOT = Path(__file__).resolve().parent.parent

#: meta key → (metric, unit)
FIGURES = {
    "reference_top10_overlap_median": ("reference_top10_overlap_median", "of 10"),
    "specific_reference_top10_overlap_median": ("specific_reference_top10_overlap_median", "of 10"),
    "stability_median_top10_overlap": ("stability_median_top10_overlap", "of 10"),
    "specific_stability_median_top10_overlap": ("specific_stability_median_top10_overlap", "of 10"),
    "self_in_top10_share": ("self_in_top10_share", "share"),
    "specific_self_in_top10_share": ("specific_self_in_top10_share", "share"),
    "approximator_r2_heldout": ("approximator_r2_heldout", "R2"),
    "output_score_steers_well": ("output_score_steers_well", "probability mass"),
    "effects_seconds_per_feature": ("effects_seconds_per_feature", "s"),
    "effects_steered_rollouts": ("effects_steered_rollouts_per_feature", "rollouts"),
    "effects_mean_rollouts": ("effects_mean_rollouts_per_feature", "rollouts"),  # with a top-up
    "topup_seconds_per_feature": ("topup_seconds_per_topped_feature", "s"),
    "control_hubs": ("control_hub_targets", "features"),
    "sae_explained_variance_typical": ("sae_ev_typical_tokens", "share"),  # attention sinks left out
    "sae_explained_variance": ("sae_ev_all_tokens", "share"),
    "sae_massive_tokens": ("sae_massive_tokens_heldout", "tokens"),
    "sae_delta_ce": ("sae_delta_ce", "nats"),
    "sink_features": ("sink_features", "features"),  # over half their activation on attention sinks
}


def figures(pack_dir: Path) -> list[tuple[str, float, str]]:
    """``(metric, value, unit)`` for every figure the pack at ``pack_dir`` holds."""
    con = connect(pack_dir / "pack.duckdb", read_only=True)
    try:
        meta = get_meta(con)
        out = [(name, float(json.loads(meta[key])), unit) for key, (name, unit) in FIGURES.items() if key in meta]
        live = con.execute("SELECT count(*) FROM features WHERE live").fetchone()[0]
        out.append(("live_features", float(live), "features"))
        cols = {r[0] for r in con.execute("DESCRIBE features").fetchall()}
        if "description" in cols:
            bad = con.execute("SELECT count(*) FROM features WHERE live AND (label IS NULL OR trim(label) = '' OR "
                              "description IS NULL OR trim(description) = '')").fetchone()[0]
            out.append(("live_features_without_label_or_description", float(bad), "features"))
        if "output_score" in cols and "output_score_steers_well" in meta:
            bar = float(json.loads(meta["output_score_steers_well"]))
            well = con.execute("SELECT count(*) FROM features WHERE live AND output_score > ?", [bar]).fetchone()[0]
            out.append(("steers_well_share", well / max(1, live), "share of live features"))
    finally:
        con.close()
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    pack_dir = Path(args[0]) if args else ROOT / "cache" / "pack"
    if not (pack_dir / "pack.duckdb").exists():
        print(f"error: no pack.duckdb in {pack_dir}", file=sys.stderr)
        return 2
    for metric, value, unit in figures(pack_dir):
        emit(metric, value, unit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
