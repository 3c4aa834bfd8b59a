"""Feature descriptions (steering_core.describe): readable words only, tokens ranked by
specificity (a hand computation of q·log(q/p)), context words, near-duplicate snippet keys, and
labels built from both sides that never show a subword piece."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steering_core.describe.inputs import (
    TokenActivationSums,
    collapse_same_text,
    content_span,
    context_words,
    snippet_key,
    specificity_scores,
    top_specific,
)
from steering_core.describe.labels import feature_description, feature_label, input_label, output_words
from steering_core.describe.words import dictionary, is_word, readable, symbol_name


def test_the_word_list_ships_offline_and_knows_words_from_pieces():
    assert len(dictionary()) > 15_000
    for w in ("wedding", " weddings", "Marriage", " bride", "celebration", "code"):
        assert is_word(w), w
    for piece in (" epidem", "enthus", " comprom", "bestos", "acknow", "phalt", "oidal", "ede", "----------", "\n"):
        assert not is_word(piece), piece


def test_readable_names_symbols_and_quotes_only_fired_pieces():
    assert readable("\n") == "line break" and readable("----------") == "dashes" and readable(",") == "comma"
    assert readable(" 6") == "numbers" and readable(" 1,000") == "numbers"
    assert readable(" epidem") is None  # a lens piece is never a label word
    assert readable(" epidem", fired=True) == "“epidem”"  # but a token the feature fires on may be named
    assert readable(" Sleep") == "Sleep"
    assert symbol_name(" wedding") is None


def test_labels_keep_words_and_drop_pieces_from_both_sides():
    assert feature_label([" wedding", " weddings", " bride", "\n"], [" epidem", " love", " enthus", " ceremony"]) \
        == "wedding, bride, line break → love, ceremony"
    assert feature_label(["----------", " Pre"], [" ede", "oidal", " Pre"]) == "Pre, dashes"  # words first, then symbol names
    assert input_label([" 6"]) == "numbers"
    assert output_words([" wedding", " love"], exclude=["weddings"]) == ["love"]  # no repeat of the input side
    assert output_words(["aires", " ted", "ceremony", " the"]) == ["ted"]  # word starts only, no function words
    d = feature_description([" wedding"], ["guests", "ceremony"], [" love", " comprom"], [" sad"])
    assert d == "Fires on wedding. Around: guests, ceremony. Steering raises love. It lowers sad."


def test_specificity_is_the_kl_term_and_beats_raw_counts():
    # feature 0: 60 % of its activation on the common token 1, 40 % on the rare token 2
    feat = np.array([0, 0, 1])
    tok = np.array([1, 2, 2])
    act = np.array([6.0, 4.0, 1.0])
    counts = np.zeros(5)
    counts[1], counts[2], counts[3] = 900, 10, 90
    s = specificity_scores(feat, tok, act, counts, 2)
    p1, p2 = 900 / 1000, 10 / 1000
    assert s[0] == pytest.approx(0.6 * math.log(0.6 / p1))  # negative: fires on "the" less than chance
    assert s[1] == pytest.approx(0.4 * math.log(0.4 / p2))
    assert s[2] == pytest.approx(1.0 * math.log(1.0 / p2))
    top = top_specific(feat, tok, s, 3, k=5)
    assert [t for t, _ in top[0]] == [2]  # the common token is dropped though it carries more activation
    assert [t for t, _ in top[1]] == [2] and top[2] == []


def test_activation_sums_match_a_dense_table_across_coalescing():
    g = torch.Generator().manual_seed(0)
    sums = TokenActivationSums(vocab_size=7, coalesce_every=10)
    dense = torch.zeros(5, 7, dtype=torch.float64)
    for _ in range(9):
        f = torch.randint(0, 5, (6,), generator=g)
        t = torch.randint(0, 7, (6,), generator=g)
        a = torch.rand(6, generator=g)
        sums.add(f, t, a)
        dense.index_put_((f, t), a.double(), accumulate=True)
    fi, ti, v = sums.result()
    got = torch.zeros(5, 7, dtype=torch.float64)
    got[torch.from_numpy(fi), torch.from_numpy(ti)] = torch.from_numpy(v)
    assert torch.allclose(got, dense)


def test_context_words_favour_words_in_many_snippets_and_skip_the_peak():
    snips = [([" the", " bride", " wore", " wedding"], 3), ([" the", " bride", " cake", " wedding"], 3),
             ([" the", " guests", " cake", " wedding"], 3)]
    counts = {"the": 5000, "bride": 3, "cake": 40, "guests": 3}
    words = context_words(snips, counts, 10_000, k=3, exclude=[" wedding"])
    assert words[:2] == ["bride", "cake"]  # in 2 snippets each; "the" is everywhere (low idf) and rank last
    assert "wedding" not in words and "guests" not in words  # the peak; a word in one snippet only


def test_snippet_keys_collapse_copies_that_differ_only_at_the_highlight():
    a = np.array([5, 6, 7, 8, 9, 10])
    b = np.array([5, 6, 7, 42, 9, 10])  # same sentence, another word highlighted
    c = np.array([1, 6, 7, 8, 9, 10])  # differs far from the peak, same near context
    ka, kb, kc = (snippet_key(x, 3, 0, 6, before=2, after=1) for x in (a, b, c))
    assert ka.shown == kb.shown and ka.text != kb.text
    assert ka.near == kc.near and ka.shown != kc.shown
    same_text_other_peak = snippet_key(a, 4, 0, 6, before=2, after=1)
    assert same_text_other_peak.text == ka.text  # the displayed text alone also makes a duplicate


def test_snippets_that_print_the_same_are_listed_once():
    """Found in the shipped pack: feature #1725 listed three top snippets of byte-fallback pieces,
    distinct token ids that all print "\ufffd", as three identical lines."""
    junk = ["\ufffd"] * 4
    snips = [{"kind": "top", "rank": 0, "tokens": junk, "acts": [0, 0, 9, 0], "similar": 2},
             {"kind": "top", "rank": 1, "tokens": [" a", " wedding"], "acts": [0, 8], "similar": 1},
             {"kind": "top", "rank": 2, "tokens": junk, "acts": [7, 0, 0, 0], "similar": 1},
             {"kind": "q0.5", "rank": 0, "tokens": junk, "acts": [0, 3, 0, 0], "similar": 1},
             {"kind": "q0.5", "rank": 1, "tokens": [" the", " bride"], "acts": [0, 2], "similar": 1}]
    out = collapse_same_text(snips)
    assert [(s["kind"], s["rank"], s["similar"]) for s in out] == [("top", 0, 3), ("top", 1, 1), ("q0.5", 1, 1)]
    assert snips[0]["similar"] == 2  # the input is left as it was


def test_content_span_never_reaches_into_the_prompt():
    content = np.array([False, False, False, True, True, True, True, False, True])
    assert content_span(content, 5, before=4, after=4) == (3, 7)
    assert content_span(np.ones(9, bool), 5, before=2, after=1) == (3, 7)
    assert content_span(np.ones(9, bool), 1, before=3, after=0) == (1, 2)  # position 0 never shows


def test_search_text_keeps_words_and_leaves_out_framing_and_what_steering_lowers():
    from steering_core.describe.labels import search_text

    text = search_text([" wedding", " epidem", "\n"], ["bride", "guests"], [" love", " comprom", " the"])
    assert text == "wedding, epidem, line break, bride, guests, love"  # no "the": a function word
    assert "Fires on" not in text and "lowers" not in text


def test_context_words_never_count_function_words():
    snips = [([" the", " and", " cake", " wedding"], 3), ([" the", " and", " cake", " wedding"], 3)]
    assert context_words(snips, {"the": 5, "and": 5, "cake": 5}, 10_000) == ["cake"]


def test_shown_token_names_whitespace_and_pieces_of_characters():
    from steering_core.describe.words import PARTIAL_CHARACTER, shown_token

    assert shown_token(" wedding ") == "wedding" and shown_token("\n\n") == repr("\n\n")
    assert shown_token("\ufffd") == shown_token(" \ufffd\ufffd") == PARTIAL_CHARACTER
    assert shown_token("caf\ufffd") == "caf\ufffd"  # a word with a broken tail still shows its letters
