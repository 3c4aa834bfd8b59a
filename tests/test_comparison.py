"""Method comparison on a tiny model: peaks, ordering, and that each row is its own sweep's peak."""

from __future__ import annotations

import math

import pytest
import torch

from steering_core import random_unit_vector
from steering_core.errors import SteeringCoreError
from steering_core.measure.comparison import USEFUL_PRODUCT, Candidate, compare, peak, peak_verdict
from steering_core.measure.sweep import AlphaPoint, SweepSpec


def test_peak_takes_the_largest_product_and_prefers_small_alpha_on_ties():
    pts = [AlphaPoint(a, {"product": v}) for a, v in ((0.0, 0.1), (2.0, 0.5), (-1.0, 0.5), (3.0, float("nan")))]
    best, p = peak(pts, "keywords")
    assert best == 0.5 and p.alpha == -1.0


def test_a_faint_peak_is_flagged_as_no_useful_alpha():
    def pts(*products):
        return [AlphaPoint(a, {"product": v}) for a, v in zip((0.0, 20.0, 40.0, 80.0), products)]

    good = peak_verdict(pts(0.0, 0.2, 0.6, 0.3), "keywords", "v")
    assert good.useful and good.warning is None and good.alpha == 40.0
    assert good.message == "v: peak keywords × coherence = 0.60 at α = 40.0"
    faint = peak_verdict(pts(0.0, 0.01, 0.03, 0.02), "keywords", "v")
    assert not faint.useful and faint.alpha == 40.0 and "No useful α" in faint.warning and "0.03" in faint.warning
    assert faint.message.startswith("v: peak keywords × coherence = 0.03")  # the peak is still said
    worse = peak_verdict(pts(0.5, 0.4, 0.2, 0.1), "keywords")
    assert not worse.useful and worse.alpha == 0.0 and "not steering" in worse.warning
    assert peak_verdict(pts(0.0, USEFUL_PRODUCT, 0.0, 0.0), "keywords").useful  # the threshold itself counts
    empty = peak_verdict([AlphaPoint(0.0, {"product": float("nan")})], "keywords")
    assert not empty.useful and empty.alpha is None and math.isnan(empty.product)


def test_compare_sweeps_each_candidate_around_its_own_auto_alpha(tiny_hf, one_thread):
    task = SweepSpec(prompts=("hello",), alphas=(0.0,), samples=2, new_tokens=5, chat=False, keywords=("the", "a"))
    cands = [Candidate("r1", random_unit_vector(tiny_hf.d_model, 1), 1),
             Candidate("r2", 3 * random_unit_vector(tiny_hf.d_model, 2), 2)]
    seen = []
    rows, curves = compare(tiny_hf, cands, task, multipliers=(0.0, 1.0, 2.0),
                           on_candidate=lambda i, n, name: seen.append((i, n, name)))
    assert seen[-1] == (2, 2, "")
    assert {r.name for r in rows} == {"r1", "r2"}
    products = [r.peak_product for r in rows]
    assert products == sorted(products, reverse=True)
    for r in rows:
        alphas = [p.alpha for p in curves[r.name]]
        assert alphas == pytest.approx([0.0, r.auto_alpha, 2 * r.auto_alpha])
        best, p = peak(curves[r.name], "keywords")
        assert r.peak_product == best and r.alpha_at_peak == p.alpha
        assert not math.isnan(r.coherence_at_peak)


def test_compare_refuses_empty_and_duplicate_names(tiny_hf):
    task = SweepSpec(prompts=("hi",), alphas=(0.0,), keywords=("a",))
    with pytest.raises(SteeringCoreError, match="at least one"):
        compare(tiny_hf, [], task)
    v = torch.ones(tiny_hf.d_model)
    with pytest.raises(SteeringCoreError, match="same name"):
        compare(tiny_hf, [Candidate("x", v, 1), Candidate("x", v, 1)], task)
