"""The Home page's pack figures in words: a standard error beside its figure, the attention sinks
with the share of the variance they carry, and an older pack's figures without them."""

from __future__ import annotations

from steering_core.browse.glossary import summary_texts


def test_figures_carry_their_se_and_the_sinks_their_share():
    summary = {"explained_variance": 0.98561, "explained_variance_se": 0.0123,
               "explained_variance_typical": 0.8034, "explained_variance_typical_se": 0.0061,
               "massive_tokens": 8, "massive_variance_share": 0.914, "massive_factor": 10.0,
               "heldout_tokens": 32225, "delta_ce": 0.197, "delta_ce_se": 0.0184, "mean_l0": 32.0,
               "reference_top10_overlap": 8.0, "built": "2026-12-05"}
    lines = summary_texts(summary, lambda key: (12, 6.0, 8.0) if key == "reference_top10_overlap" else None)
    assert lines == {
        "SAE explained variance, all held-out tokens": "0.986 ± 0.012",
        "SAE explained variance without the massive-activation tokens": "0.803 ± 0.0061",
        "massive-activation tokens (attention sinks)":
            "8 of 32,225 (residual norm above 10× the median), carrying 91% of the variance",
        "ΔCE with the SAE spliced in (nats)": "0.197 ± 0.018",
        "mean L0 (features firing per token)": "32",
        "reference top-10 overlap, raw": "8 of 10 (median over 12 features; middle half 6–8)",
        "built": "2026-12-05",
    }


def test_an_older_pack_without_the_new_figures_reads_as_before():
    summary = {"explained_variance": 0.983, "explained_variance_se": None, "explained_variance_typical": None,
               "massive_tokens": None, "massive_variance_share": None, "delta_ce": 0.21, "delta_ce_se": None}
    assert summary_texts(summary, lambda key: None) == {
        "SAE explained variance, all held-out tokens": "0.983", "ΔCE with the SAE spliced in (nats)": "0.21"}
