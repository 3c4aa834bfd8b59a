"""Where a template pair's target word sits: pure string functions on two texts.

A template pair (``datasets.generators.from_templates``) is two texts that agree up to a target word
and then differ ("... In the end they won." / "... they lost."). The prompt-pair metrics
(:mod:`steering_core.measure.prompt_pairs`) read features at that word and ask the steered model
to write it, so they need the shared prefix, the two words, and each text cut right after its
word. Kept apart from the metrics because it is text handling with no model in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TemplateSlot:
    """Where a template pair's target goes: the shared text before it, the two target words, and the
    two texts cut right after their target word (what the feature metrics read at ``at="slot"``)."""

    prefix: str
    positive: str
    negative: str
    positive_text: str
    negative_text: str


_EDGE = re.compile(r"^[^\w]+|[^\w]+$")
_CHUNK = re.compile(r"\s*(\S+)")
_TRAIL = re.compile(r"[^\w]+$")


def first_word(text: str) -> str:
    """The first whitespace-separated word of ``text`` without punctuation at its edges ("" if none)."""
    parts = text.split()
    return _EDGE.sub("", parts[0]) if parts else ""


def same_word(a: str, b: str) -> bool:
    """Exact match of two words, ignoring case and edge punctuation."""
    a, b = first_word(a).casefold(), first_word(b).casefold()
    return bool(a) and a == b


def template_slot(positive: str, negative: str) -> TemplateSlot | None:
    """The target slot of a pair: the two texts agree up to a word, then differ. ``None`` when the
    pair differs at its very first word or has no word at the slot (not a template pair)."""
    c = 0
    for x, y in zip(positive, negative):
        if x != y:
            break
        c += 1
    while c > 0 and not positive[c - 1].isspace():  # back to the start of the word that differs
        c -= 1
    prefix = positive[:c].rstrip()
    pos, neg = first_word(positive[c:]), first_word(negative[c:])
    if not prefix or not pos or not neg:
        return None
    return TemplateSlot(prefix, pos, neg, _cut(positive, c), _cut(negative, c))


def _cut(text: str, start: int) -> str:
    """``text`` up to the end of the word at ``start``, without the punctuation that follows it."""
    m = _CHUNK.match(text, start)
    return text[:m.start(1)] + _TRAIL.sub("", m.group(1))
