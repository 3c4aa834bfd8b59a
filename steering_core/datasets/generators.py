"""Pair generators: many minimal pairs from templates, story pairs with a shared beginning, the
chat-template wrapping an instruction-tuned model needs, and the heldout split.

Minimal pairs — two texts that differ only in the concept — make the activation difference
carry the concept and little else (docs/design.md §Vector methods); every generator's output
goes through the same validation as typed or uploaded pairs.
"""

from __future__ import annotations

import numbers
import random
import re
from dataclasses import replace
from typing import Any, Callable, Iterable

from steering_core.datasets.pairs import MAX_PAIRS, Pair, as_rows, validate_rows
from steering_core.errors import DatasetError, SteeringCoreError

_PLACEHOLDER = re.compile(r"<context>|<target>")


def _str_list(values: Any, what: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise DatasetError(f"Give the {what} as a list of texts.")
    if not values:
        raise DatasetError(f"The list of {what} is empty; give at least one.")
    for i, v in enumerate(values, 1):
        if not isinstance(v, str):
            raise DatasetError(f"{what.capitalize()} item {i} is {type(v).__name__}, not text.")
    return list(values)


def _no_repeats(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise DatasetError(f"The {what} list has {v!r} twice, which would repeat pairs; remove one.")
        seen.add(v)


def from_templates(templates: list[str], contexts: list[str], positive_targets: list[str],
                   negative_targets: list[str]) -> list[Pair]:
    """Many minimal pairs from a few templates ([Purchase 2025] §3.2.1; docs/references.md): the
    two prompts of a pair share template and context and differ only in the target, e.g.
    ``"Everyone thought <context> would lose. In the end they <target>."`` with contexts
    ``["the dancer", "the driver"]`` and targets ``won``/``lost``.

    Every template × context × aligned (positive_target, negative_target) gives one pair, in
    that nesting order. Placeholders are replaced in one pass, so a context containing the text
    ``<target>`` is kept literally.
    """
    templates = _str_list(templates, "templates")
    contexts = _str_list(contexts, "contexts")
    pos_t = _str_list(positive_targets, "positive targets")
    neg_t = _str_list(negative_targets, "negative targets")
    if len(pos_t) != len(neg_t):
        raise DatasetError(f"There are {len(pos_t)} positive targets and {len(neg_t)} negative targets; "
                           "they pair up by position, so give the same number of each.")
    for i, t in enumerate(templates, 1):
        if "<target>" not in t:
            raise DatasetError(f"Template {i} has no <target> placeholder, so its pairs would be identical: {t!r}.")
        if "<context>" not in t and len(contexts) > 1:
            raise DatasetError(f"Template {i} has no <context> placeholder but there are {len(contexts)} contexts, "
                               f"which would repeat each pair; add <context> to it: {t!r}.")
    _no_repeats(templates, "templates")
    _no_repeats(contexts, "contexts")
    _no_repeats([f"{p}\x00{n}" for p, n in zip(pos_t, neg_t)], "target pairs")
    for i, (p, n) in enumerate(zip(pos_t, neg_t), 1):
        if p.strip() == n.strip():
            raise DatasetError(f"Target pair {i} has the same word on both sides ({p!r}); the pair would be identical.")
    total = len(templates) * len(contexts) * len(pos_t)
    if total > MAX_PAIRS:
        raise DatasetError(f"{len(templates)} templates × {len(contexts)} contexts × {len(pos_t)} targets make "
                           f"{total:,} pairs, more than the {MAX_PAIRS:,} one dataset may hold; use fewer.")

    def fill(template: str, context: str, target: str) -> str:
        return _PLACEHOLDER.sub(lambda m: context if m.group(0) == "<context>" else target, template)

    pairs = [Pair(fill(t, c, p), fill(t, c, n)) for t in templates for c in contexts for p, n in zip(pos_t, neg_t)]
    return validate_rows(pairs, what="The generated set")[0]


# A continuation that starts with one of these attaches to the beginning without a space.
_NO_SPACE_BEFORE = tuple(",.;:!?…)]}")


def story_pairs(beginning: str, positive_endings: list[str], negative_endings: list[str]) -> list[Pair]:
    """Pairs of short stories with one shared beginning and contrasting continuations
    ([SAE-Gender]; docs/references.md): because the beginning is identical, the difference of
    activations comes from the continuation alone.

    Each pair is ``beginning + ending``; a single space is put between them unless the beginning
    already ends in whitespace or the ending starts with whitespace or punctuation. That study
    also starts both continuations with the same word, which keeps the pair even more minimal.
    """
    if not isinstance(beginning, str) or not beginning.strip():
        raise DatasetError("Give the stories a shared beginning (a sentence or two both versions start with).")
    pos_e = _str_list(positive_endings, "positive endings")
    neg_e = _str_list(negative_endings, "negative endings")
    if len(pos_e) != len(neg_e):
        raise DatasetError(f"There are {len(pos_e)} positive endings and {len(neg_e)} negative endings; "
                           "they pair up by position, so give the same number of each.")

    def join(ending: str) -> str:
        if beginning[-1].isspace() or not ending or ending[0].isspace() or ending.startswith(_NO_SPACE_BEFORE):
            return beginning + ending
        return beginning + " " + ending

    for i, (p, n) in enumerate(zip(pos_e, neg_e), 1):
        if not p.strip() or not n.strip():
            raise DatasetError(f"Ending pair {i} has an empty ending; the pair would differ in one side only.")
    return validate_rows([Pair(join(p), join(n)) for p, n in zip(pos_e, neg_e)], unit="ending pair",
                     what="The story set")[0]


def _template_head(format_prompt: Callable[[str], str]) -> str:
    """What the template puts before a user message (empty when it cannot be told)."""
    mark = "\u2063wrap-check\u2063"
    try:
        wrapped = format_prompt(mark)
    except Exception:  # noqa: BLE001 - the wrapping loop below reports a failing template
        return ""
    return wrapped.split(mark, 1)[0] if isinstance(wrapped, str) and mark in wrapped else ""


def wrap_chat(pairs: Iterable[Pair], format_prompt: Callable[[str], str]) -> list[Pair]:
    """The pairs as a chat model sees a user message (the app passes ``model.format_prompt``):
    an instruction-tuned model reads its own template around every prompt, so activations taken
    from raw text would not match what steering meets at generation time. Splits are kept.
    Wrapping twice would nest one template inside another, so a text that already starts the way
    the template starts is refused, naming its row."""
    if not callable(format_prompt):
        raise DatasetError("format_prompt must be a function from text to text (e.g. model.format_prompt).")
    head = _template_head(format_prompt)
    out: list[Pair] = []
    for i, p in enumerate(as_rows(pairs), 1):
        if not isinstance(p, Pair):
            raise DatasetError(f"Row {i} is {type(p).__name__}, not a Pair; validate the rows first.")
        if head and (p.positive.startswith(head) or p.negative.startswith(head)):
            raise DatasetError(f"Row {i} is already in the chat template; wrapping it again would nest the "
                               "template inside itself. Nothing was changed.")
        try:
            pos, neg = format_prompt(p.positive), format_prompt(p.negative)
        except SteeringCoreError:
            raise
        except Exception as exc:  # a template error is shown, not a traceback
            raise DatasetError(f"The chat template failed on row {i} ({type(exc).__name__}: {exc}).") from exc
        if not isinstance(pos, str) or not isinstance(neg, str):
            raise DatasetError(f"format_prompt returned {type(pos).__name__}, not text, on row {i}.")
        if pos == neg:
            raise DatasetError(f"format_prompt made row {i}'s positive and negative identical; it must keep the text.")
        out.append(Pair(pos, neg, p.split))
    return out


def split_heldout(pairs: Iterable[Pair], fraction: float = 0.2, seed: int = 0) -> list[Pair]:
    """The same pairs with ``round(fraction × n)`` of them marked heldout, so a vector can be
    scored on pairs it was not fitted on. Deterministic for a given order, fraction and seed;
    at least one pair always stays train, and sets of fewer than 3 pairs are not split (there
    is nothing to spare). Existing split marks are replaced."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction < 1:
        raise DatasetError(f"The heldout fraction must be a number from 0 up to (not including) 1, not {fraction!r}.")
    rows = as_rows(pairs)
    for i, p in enumerate(rows, 1):
        if not isinstance(p, Pair):
            raise DatasetError(f"Row {i} is {type(p).__name__}, not a Pair; validate the rows first.")
    n = len(rows)
    k = 0 if n < 3 else min(int(round(float(fraction) * n)), n - 1)
    chosen = set(random.Random(seed).sample(range(n), k))
    return [replace(p, split="heldout" if i in chosen else "train") for i, p in enumerate(rows)]
