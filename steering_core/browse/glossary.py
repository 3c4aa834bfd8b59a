"""What the browser's words and numbers mean, one sentence each: the Home page and the README
read them from here, so the app and its documentation never disagree."""

GLOSSARY: dict[str, str] = {
    "Label": "A few words for a feature, built from the tokens it fires on most specifically (left of →) and "
             "the dictionary words steering with it makes more likely (right of →); edit it on any card.",
    "Description": "The same two sides in a sentence (fires on …, around …, steering raises …); meaning search "
                   "compares your query with descriptions.",
    "Effect": "How much steering with a feature's decoder row at its loss-matched α (next-token loss +0.5 nats) "
              "changes another feature's mean activation over 224 sampled continuations, against the same "
              "continuations unsteered.",
    "Specific effect": "The effect minus the generic response: what steering in 128 random directions at their "
                       "own α does to that feature too.",
    "± (standard error)": "The sampling uncertainty of an effect, from the spread over continuations paired by "
                          "prompt; grey rows are within 2 SE of zero and may be noise.",
    "Output score": "Probability the feature's steering moves onto its own top logit-lens tokens at the next "
                    "token (exact, no sampling); above random directions' 95th percentile it \"steers well\".",
    "Reliability": "The pack's reference overlap says how many of a feature's top-10 effects a 4×-larger fresh "
                   "measurement finds again (of 10); stability is the same between two equal-size measurements.",
}

__all__ = ["GLOSSARY"]
