"""What the browser's words and numbers mean, one sentence each: the Home page and the README
read them from here, so the app and its documentation never disagree."""

GLOSSARY: dict[str, str] = {
    "Label": "A few words for a feature, built from the tokens it fires on most specifically (left of →) and "
             "the dictionary words steering with it makes more likely (right of →); edit it on any card.",
    "Description": "The same two sides in a sentence (fires on …, around …, steering raises …); meaning search "
                   "compares your query with descriptions.",
    "Effect": "How much steering with a feature's decoder row at its loss-matched α (next-token loss +0.5 nats) "
              "changes another feature's mean activation over sampled continuations (how many: the pack's "
              "steered rollouts per feature), against the same continuations unsteered.",
    "Specific effect": "The effect minus the generic response: what steering in 128 random directions at their "
                       "own α does to that feature too.",
    "± (standard error)": "The sampling uncertainty of an effect, from the spread over continuations paired by "
                          "prompt; grey rows are within 2 SE of zero and may be noise.",
    "Output score": "Probability the feature's steering moves onto its own top logit-lens tokens at the next "
                    "token (exact, no sampling); above random directions' 95th percentile it \"steers well\".",
    "Reliability": "The pack's reference overlap says how many of a feature's top-10 effects a fresh measurement "
                   "at the larger reference budget finds again (of 10, median over features); stability is the same "
                   "between two measurements at the pack's own budget.",
}

#: How the Home page names each figure of ``FeaturePack.summary()`` (a key without an entry is
#: shown as its key).
SUMMARY_LABELS: dict[str, str] = {
    "model": "model", "hook": "hook point", "d_sae": "SAE width (features)", "live_features": "live features",
    "measured_features": "features with measured effects", "explained_variance": "SAE explained variance",
    "delta_ce": "ΔCE with the SAE spliced in (nats)", "mean_l0": "mean L0 (features firing per token)",
    "dead_fraction": "dead features (share)", "precision": "measured in",
    "steered_rollouts": "steered rollouts per feature", "reference_rollouts": "reference rollouts per feature",
    "reference_top10_overlap": "reference top-10 overlap, raw",
    "specific_reference_top10_overlap": "reference top-10 overlap, specific",
    "stability_top10_overlap": "stability top-10 overlap, raw",
    "specific_stability_top10_overlap": "stability top-10 overlap, specific",
    "self_in_top10": "features in their own raw top 10 (share)",
    "specific_self_in_top10": "features in their own specific top 10 (share)",
    "hub_targets": "hub targets (random directions move them)", "approximator_r2": "approximator held-out R²",
    "corpus_tokens": "corpus tokens", "built": "built",
}

#: The figures of ``FeaturePack.summary()`` that are a median top-10 overlap over features.
OVERLAP_FIGURES = ("reference_top10_overlap", "specific_reference_top10_overlap", "stability_top10_overlap",
                   "specific_stability_top10_overlap")


def overlap_text(median: float, spread: tuple[int, float, float] | None) -> str:
    """A median top-10 overlap as a person reads it, with what it is a median of and its spread:
    "8 of 10 (median over 12 features; middle half 7–9)"."""
    if spread is None:
        return f"{median:g} of 10 (median over features)"
    n, q1, q3 = spread
    return f"{median:g} of 10 (median over {n} features; middle half {q1:g}–{q3:g})"


__all__ = ["GLOSSARY", "OVERLAP_FIGURES", "SUMMARY_LABELS", "overlap_text"]
