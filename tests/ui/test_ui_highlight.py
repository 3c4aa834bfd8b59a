"""ui.highlight: a lower-quantile snippet is coloured on the feature's maximum, not its own peak
(a user-style audit saw q0.1 samples look as strong as the top ones)."""

from __future__ import annotations

import re

from ui.highlight import snippet_html


def _alphas(html: str) -> list[float]:
    return [float(a) for a in re.findall(r"rgba\(\d+,\s*\d+,\s*\d+,\s*([0-9.]+)\)", html)]


def test_a_quantile_snippet_is_faint_on_the_features_scale():
    snip = {"tokens": ["a", "b"], "acts": [0.0, 2.0], "max_act": 2.0}
    own, scaled = _alphas(snippet_html(snip)), _alphas(snippet_html(snip, scale=20.0))
    assert own and scaled and max(scaled) < max(own)
    assert max(scaled) * 10 <= max(own) + 1e-6


def test_token_spans_show_whitespace_and_character_pieces_readably():
    from ui.highlight import token_spans

    assert token_spans([" wedding", "\n", "\ufffd\ufffd", "`"]) == (
        "`` wedding ``, `` '\\n' ``, `` ⟨part of a character⟩ ``, `` ` ``")
    assert token_spans([" in", " a"], [0.0271, -0.5]) == "`` in `` +0.027, `` a `` -0.500"
