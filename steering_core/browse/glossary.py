"""What the browser's words and numbers mean, one sentence each: the Home page and the README
read them from here, so the app and its documentation never disagree."""

from collections.abc import Callable

from steering_core.model.massive import MASSIVE_FACTOR

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
    "SAE explained variance": "The share of the residual's variance (about its mean) the SAE's reconstruction "
                              "keeps on held-out tokens, ± a bootstrap SE over windows. A few attention-sink tokens "
                              f"(residual norm over {MASSIVE_FACTOR:g}× the median) carry most of the variance and are easy to "
                              "reconstruct, so the figure without them is how much of an ordinary token the SAE keeps.",
    "Reliability": "The pack's reference overlap says how many of a feature's top-10 effects a fresh measurement "
                   "at the larger reference budget finds again (of 10, median over features); stability is the same "
                   "between two measurements at the pack's own budget.",
}

#: How the Home page names each figure of ``FeaturePack.summary()`` (a key without an entry is
#: shown as its key).
SUMMARY_LABELS: dict[str, str] = {
    "model": "model", "hook": "hook point", "d_sae": "SAE width (features)", "live_features": "live features",
    "measured_features": "features with measured effects",
    "explained_variance": "SAE explained variance, all held-out tokens",
    "explained_variance_typical": "SAE explained variance without the massive-activation tokens",
    "massive_tokens": "massive-activation tokens (attention sinks)",
    "delta_ce": "ΔCE with the SAE spliced in (nats)", "mean_l0": "mean L0 (features firing per token)",
    "dead_fraction": "dead features (share)", "precision": "measured in",
    "steered_rollouts": "steered rollouts per feature", "reference_rollouts": "reference rollouts per feature",
    "reference_top10_overlap": "reference top-10 overlap, raw",
    "specific_reference_top10_overlap": "reference top-10 overlap, specific",
    "stability_top10_overlap": "stability top-10 overlap, raw",
    "specific_stability_top10_overlap": "stability top-10 overlap, specific",
    "self_in_top10": "features in their own raw top 10 (share)",
    "specific_self_in_top10": "features in their own specific top 10 (share)",
    "hub_targets": "hub targets (random directions move them)",
    "sink_features": "features firing mostly on attention sinks", "approximator_r2": "approximator held-out R²",
    "corpus_tokens": "corpus tokens", "built": "built",
}

#: The figures of ``FeaturePack.summary()`` that are a median top-10 overlap over features.
OVERLAP_FIGURES = ("reference_top10_overlap", "specific_reference_top10_overlap", "stability_top10_overlap",
                   "specific_stability_top10_overlap")


#: Figures read as part of another figure's line on the Home page, not on their own.
_FOLDED = ("massive_variance_share", "massive_factor", "heldout_tokens")


def _number(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_texts(summary: dict, spread_of: Callable[[str], tuple[int, float, float] | None]) -> dict[str, str]:
    """``FeaturePack.summary()`` as the Home page lists it, label → text: a figure with a standard
    error (``<key>_se``) reads "0.986 ± 0.004", a median overlap says what it is a median of
    (``spread_of(key)``), and the massive-activation count says what share of the variance those
    few tokens carry, since that share is why the two explained variances differ."""
    out = {}
    for k, v in summary.items():
        if v is None or k in _FOLDED or (k.endswith("_se") and k[:-3] in summary):
            continue
        if k in OVERLAP_FIGURES:
            text = overlap_text(v, spread_of(k))
        elif k == "massive_tokens":
            text = f"{v:,}" + (f" of {summary['heldout_tokens']:,}" if summary.get("heldout_tokens") else "")
            if summary.get("massive_factor") is not None:
                text += f" (residual norm above {summary['massive_factor']:g}× the median)"
            if summary.get("massive_variance_share") is not None:
                text += f", carrying {summary['massive_variance_share']:.0%} of the variance"
        else:
            se = summary.get(f"{k}_se")
            text = _number(v) + (f" ± {se:.2g}" if isinstance(se, float) and se == se else "")
        out[SUMMARY_LABELS.get(k, k)] = text
    return out


def overlap_text(median: float, spread: tuple[int, float, float] | None) -> str:
    """A median top-10 overlap as a person reads it, with what it is a median of and its spread:
    "8 of 10 (median over 12 features; middle half 7–9)"."""
    if spread is None:
        return f"{median:g} of 10 (median over features)"
    n, q1, q3 = spread
    return f"{median:g} of 10 (median over {n} features; middle half {q1:g}–{q3:g})"


__all__ = ["GLOSSARY", "OVERLAP_FIGURES", "SUMMARY_LABELS", "overlap_text", "summary_texts"]
