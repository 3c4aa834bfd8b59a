"""Sweep scores as pure functions (steering_core.measure.scores): whole-word keyword hits, the
capped likelihood ratio, and behaviour × coherence with its delta-method standard error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steering_core.measure.scores import (
    AlphaPoint,
    add_product,
    coherence_score,
    finish,
    format_se,
    keyword_hits,
    mean_and_se,
)


def test_keyword_hits_are_whole_words_and_case_blind():
    assert keyword_hits(["The cat", "theatre", "a dog", "A"], ["the", "a"]).tolist() == [1.0, 0.0, 1.0, 1.0]


def test_coherence_is_a_capped_likelihood_ratio():
    assert coherence_score(-2.0, -2.0) == 1.0
    assert coherence_score(-1.0, -2.0) == 1.0
    assert coherence_score(-3.0, -2.0) == pytest.approx(math.exp(-1.0))
    assert math.isnan(coherence_score(float("nan"), -2.0))


def test_add_product_is_the_rule_finish_applies():
    pts = finish([AlphaPoint(0.0, {"loglik": -2.0, "keywords": 0.5}), AlphaPoint(1.0, {"loglik": -3.0, "keywords": 1.5}),
                  AlphaPoint(2.0, {"loglik": -3.0, "target": 4.0})], "keywords")
    assert pts[1].get("product") == pytest.approx(math.exp(-1.0))  # behaviour clipped to 1
    alone = add_product(AlphaPoint(1.0, {"loglik": -3.0, "keywords": 1.5}), "keywords", -2.0)
    assert alone.scores == pytest.approx(pts[1].scores, nan_ok=True)
    assert add_product(AlphaPoint(2.0, {"loglik": -3.0, "target": 4.0}), "target", -2.0).get("product") == \
        pytest.approx(4.0 * math.exp(-1.0))  # activations are not clipped


def test_product_standard_error_is_the_delta_method_by_hand():
    """behaviour 0.5 ± 0.1, log-likelihood −2 ± 0.05 against an unsteered −1.5 ± 0.05."""
    p = add_product(AlphaPoint(1.0, {"loglik": -2.0, "loglik_se": 0.05, "keywords": 0.5, "keywords_se": 0.1}),
                    "keywords", -1.5, 0.05)
    c = math.exp(-0.5)
    c_se = c * math.sqrt(0.05 ** 2 + 0.05 ** 2)
    assert p.get("coherence") == pytest.approx(c) and p.get("coherence_se") == pytest.approx(c_se)
    assert p.get("product") == pytest.approx(0.5 * c)
    assert p.get("product_se") == pytest.approx(math.sqrt((c * 0.1) ** 2 + (0.5 * c_se) ** 2))
    # at the cap the coherence does not move; the reference point itself has coherence 1 exactly
    up = add_product(AlphaPoint(2.0, {"loglik": -1.0, "loglik_se": 0.05, "keywords": 0.4, "keywords_se": 0.1}),
                     "keywords", -1.5, 0.05)
    assert up.get("coherence_se") == 0.0 and up.get("product_se") == pytest.approx(0.1)
    pts = finish([AlphaPoint(0.0, {"loglik": -1.5, "loglik_se": 0.05, "keywords": 0.2, "keywords_se": 0.1}),
                  AlphaPoint(1.0, {"loglik": -2.0, "loglik_se": 0.05, "keywords": 0.5, "keywords_se": 0.1})],
                 "keywords")
    assert pts[0].get("coherence_se") == 0.0 and pts[0].get("product_se") == pytest.approx(0.1)
    assert pts[1].get("product_se") == pytest.approx(p.get("product_se"))  # finish uses the α = 0 point's SE


def test_wilson_interval_of_a_perfect_small_sample_is_wide():
    """9 of 9 held-out pairs is not "1.00 ± 0" (the binomial SE there is zero)."""
    from steering_core.measure.scores import wilson_interval

    lo, hi = wilson_interval(9, 9)
    assert hi == 1.0 and abs(lo - 0.7008) < 1e-3
    lo, hi = wilson_interval(5, 10)
    assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3 and abs((lo + hi) / 2 - 0.5) < 1e-12
    assert all(x != x for x in wilson_interval(0, 0))


def test_one_rollout_has_an_unknown_standard_error_never_zero():
    """One value has no spread: its SE is unknown (NaN), and so is every SE computed from it, while
    the reference point's coherence is still exactly 1 ± 0."""
    assert mean_and_se(np.array([0.7])) == (0.7, pytest.approx(float("nan"), nan_ok=True))
    m, se = mean_and_se(np.array([0.0, 1.0]))
    assert m == 0.5 and se == pytest.approx(0.5)
    pts = finish([AlphaPoint(0.0, {"loglik": -2.0, "loglik_se": float("nan"), "keywords": 0.0,
                                   "keywords_se": float("nan")}),
                  AlphaPoint(1.0, {"loglik": -3.0, "loglik_se": float("nan"), "keywords": 1.0,
                                   "keywords_se": float("nan")})], "keywords")
    assert pts[0].get("coherence") == 1.0 and pts[0].get("coherence_se") == 0.0
    assert math.isnan(pts[1].get("coherence_se")) and math.isnan(pts[1].get("product_se"))
    assert pts[1].get("product") == pytest.approx(math.exp(-1.0))
    assert format_se(0.1234) == "± 0.12" and format_se(float("nan")) == "(no standard error)"


def test_a_rate_every_rollout_agreed_on_says_how_far_it_could_still_be():
    """Audit: a sweep whose 6 rollouts per α all missed the keywords read "0.00 ± 0.00" at every α,
    an exact figure nobody measured; the page now gives the Wilson bound beside it."""
    from steering_core.measure.scores import AlphaPoint, agreement_note, wilson_interval

    texts = ["a"] * 12
    none = AlphaPoint(0.0, {"keywords": 0.0, "keywords_se": 0.0}, texts)
    some = AlphaPoint(10.0, {"keywords": 0.25, "keywords_se": 0.13}, texts)
    note = agreement_note([none, some])
    hi = wilson_interval(0, 12)[1]
    assert f"with 12 rollouts, a rate of 0 is still consistent with up to {hi:.2f}" in note
    assert round(hi, 2) == 0.24  # the textbook figure for 0 of 12
    assert agreement_note([some]) is None  # a rate with spread has its SE
    assert agreement_note([AlphaPoint(0.0, {"keywords": 0.0, "keywords_se": float("nan")}, ["a"])]) is None
