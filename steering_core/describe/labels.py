"""A feature's label and description, from both sides, in words a person can read.

* **Input side**: the tokens the feature fires on, most specific first, and the words around them.
* **Output side**: TokenChange, the tokens whose next-token probability steering raises (exact,
  [Gur-Arieh 2025]); the logit lens when TokenChange is missing.

A label is at most three input words and two output words, "wedding, bride, marriage → love,
ceremony". Output tokens enter only when they are dictionary words (the lens and TokenChange are
full of subword pieces like "epidem"); input tokens may also be a symbol's name ("line break") or,
when nothing readable is left, the quoted token the feature fires on. The description spells the
same out in a sentence; semantic search embeds the description, so "weddings and marriage" meets
words, never fragments."""

from __future__ import annotations

from typing import Sequence

from steering_core.describe.words import is_stop_word, is_word, readable


def _unique(words, limit: int) -> list[str]:
    out, seen = [], set()
    for w in words:
        key = w.lower().rstrip("s") if w else w
        if w and key not in seen:
            seen.add(key)
            out.append(w)
        if len(out) == limit:
            break
    return out


def input_words(top_tokens: Sequence[str], limit: int = 3) -> list[str]:
    """The readable forms of the tokens a feature fires on, dictionary words first."""
    forms = [readable(t, fired=True) for t in top_tokens]
    words = [f for f in forms if f and is_word(f)]
    others = [f for f in forms if f and not is_word(f)]
    return _unique(words + others, limit)


def output_words(tokens: Sequence[str], exclude: Sequence[str] = (), limit: int = 2) -> list[str]:
    """Dictionary words (three letters or more, no function words) among the tokens steering
    promotes, not already named on the input side. Only word-initial tokens (a leading space)
    count: "aires" or "ted" are entries of the word list too, but as tokens without a space they
    are the ends of longer words."""
    skip = {w.lower().rstrip("s") for w in exclude}
    cand = [t.strip() for t in tokens
            if t.startswith(" ") and is_word(t) and len(t.strip()) >= 3 and not is_stop_word(t)]
    return _unique([c for c in cand if c.lower().rstrip("s") not in skip], limit)


def input_label(top_tokens: Sequence[str]) -> str:
    """The label before output effects are known (the stats stage): input words only."""
    return ", ".join(input_words(top_tokens)) or "unreadable tokens"


def feature_label(top_tokens: Sequence[str], promoted: Sequence[str]) -> str:
    """"wedding, bride, marriage → love, ceremony": what fires it, and what steering with it writes."""
    ins = input_words(top_tokens)
    outs = output_words(promoted, exclude=ins)
    left = ", ".join(ins) or "unreadable tokens"
    return f"{left} → {', '.join(outs)}" if outs else left


def input_description(top_tokens: Sequence[str], context: Sequence[str]) -> str:
    ins = input_words(top_tokens, limit=5)
    text = f"Fires on {', '.join(ins)}." if ins else "Fires on tokens without a readable form."
    if context:
        text += f" Around: {', '.join(context)}."
    return text


#: What a description says of a feature whose measured output effect is no larger than a random
#: direction's: naming the tokens it raises would present noise as its effect.
NO_OUTPUT_EFFECT = "Steering with it moves next-token probabilities no more than a random direction does."


def feature_description(top_tokens: Sequence[str], context: Sequence[str], gains: Sequence[str],
                        losses: Sequence[str] = (), steers: bool = True) -> str:
    """The input side, then the words steering raises and lowers (dictionary words only), or
    :data:`NO_OUTPUT_EFFECT` when ``steers`` is False (its output score below the random bar)."""
    text = input_description(top_tokens, context)
    if not steers:
        return f"{text} {NO_OUTPUT_EFFECT}"
    up = output_words(gains, limit=5)
    down = output_words(losses, limit=3)
    if up:
        text += f" Steering raises {', '.join(up)}."
    if down:
        text += f" It lowers {', '.join(down)}."
    return text


def sweep_keywords(top_tokens: Sequence[str], gains: Sequence[str], steers: bool, limit: int = 6) -> list[str]:
    """Words to count in a sweep's rollouts for this feature: what it fires on, and, only when it
    steers better than a random direction, the words steering raises (else those are noise:
    :data:`NO_OUTPUT_EFFECT`). Function words and words under three letters are left out: "a" or
    "be" would be hit by almost any text. Lower case, since hits are counted so."""
    ins = [w for w in input_words(top_tokens, limit=2 * limit) if len(w) >= 3 and is_word(w) and not is_stop_word(w)]
    outs = output_words(gains, exclude=ins, limit=3) if steers else []
    return [w.lower() for w in _unique(ins[:max(1, limit - len(outs))] + outs, limit)]


def search_text(top_tokens: Sequence[str], context: Sequence[str], gains: Sequence[str] = ()) -> str:
    """What semantic search embeds: the description's words without its framing, and without what
    steering *lowers* (a feature that suppresses "wedding" should not answer a query about
    weddings): input words, context words, words steering raises."""
    words = input_words(top_tokens, limit=5) + list(context) + output_words(gains, limit=5)
    return ", ".join(w.strip("“”") for w in _unique(words, 15))


__all__ = ["NO_OUTPUT_EFFECT", "feature_description", "search_text", "feature_label", "input_description", "input_label", "input_words", "output_words"]
