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
    def pts(*products, se=0.05):
        return [AlphaPoint(a, {"product": v, "product_se": se}) for a, v in zip((0.0, 20.0, 40.0, 80.0), products)]

    good = peak_verdict(pts(0.0, 0.2, 0.6, 0.3), "keywords", "v")
    assert good.useful and good.warning is None and good.alpha == 40.0
    assert good.message == "v: peak keywords × coherence = 0.60 ± 0.05 at α = 40.0"
    unknown = peak_verdict(pts(0.0, 0.2, 0.6, 0.3, se=float("nan")), "keywords", "v")  # one rollout per α
    assert unknown.message == "v: peak keywords × coherence = 0.60 (no standard error) at α = 40.0"
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
        assert r.peak_product_se == p.get("product_se") and r.peak_product_se >= 0  # the peak's own SE


def test_compare_refuses_empty_and_duplicate_names(tiny_hf):
    task = SweepSpec(prompts=("hi",), alphas=(0.0,), keywords=("a",))
    with pytest.raises(SteeringCoreError, match="at least one"):
        compare(tiny_hf, [], task)
    v = torch.ones(tiny_hf.d_model)
    with pytest.raises(SteeringCoreError, match="same name"):
        compare(tiny_hf, [Candidate("x", v, 1), Candidate("x", v, 1)], task)


def test_compare_adds_prompting_rows_scored_on_the_same_rows(tiny_hf, one_thread):
    from steering_core.measure.prompting import PromptEntry

    task = SweepSpec(prompts=("hello",), alphas=(0.0,), samples=2, new_tokens=5, chat=True, keywords=("the", "a"))
    entries = [PromptEntry("no prompt", ""), PromptEntry("weddings", "Always mention weddings.", "prefix")]
    seen = []
    rows, curves = compare(tiny_hf, [Candidate("r1", random_unit_vector(tiny_hf.d_model, 1), 1)], task,
                           multipliers=(0.0, 1.0), prompts=entries, on_candidate=lambda i, n, name: seen.append(i))
    assert seen == [0, 1, 2, 3]
    by = {r.name: r for r in rows}
    assert by["r1"].kind == "vector" and by["weddings"].kind == "prompt"
    assert by["weddings"].layer is None and by["weddings"].instruction == "Always mention weddings."
    assert math.isnan(by["weddings"].auto_alpha) and math.isnan(by["weddings"].alpha_at_peak)
    zero = next(p for p in curves["r1"] if p.alpha == 0.0)
    empty = curves["no prompt"]
    # the empty prompt is the additive vector's α = 0 row, bit for bit; a prompting curve is one point
    assert len(empty) == 1 and empty[0] == zero
    assert by["no prompt"].peak_product == zero.get("product") and by["no prompt"].coherence_at_peak == 1.0
    p = curves["weddings"][0]
    assert by["weddings"].peak_product == p.get("product") == p.get("keywords") * p.get("coherence")
    products = [r.peak_product for r in rows]
    assert products == sorted(products, reverse=True)


def test_compare_checks_prompting_entries_before_generating(tiny_hf, monkeypatch):
    import steering_core.measure.comparison as cmp_mod
    from steering_core.measure.prompting import PromptEntry
    from steering_core.measure.sweep import SweepError

    monkeypatch.setattr(cmp_mod, "run_sweep", lambda *a, **k: pytest.fail("generated before checking"))
    task = SweepSpec(prompts=("hi",), alphas=(0.0,), chat=False, keywords=("a",))
    v = torch.ones(tiny_hf.d_model)
    with pytest.raises(SweepError, match="prefix instead"):
        compare(tiny_hf, [Candidate("x", v, 1)], task, prompts=[PromptEntry("p", "Be brief.", "system")])
    with pytest.raises(SteeringCoreError, match="same name"):
        compare(tiny_hf, [Candidate("x", v, 1)], task, prompts=[PromptEntry(" x ", "Be brief.", "prefix")])
    rows, curves = compare(tiny_hf, [], SweepSpec(prompts=("hi",), alphas=(0.0,), samples=1, new_tokens=3,
                                                  chat=False, keywords=("a",)),
                           prompts=[PromptEntry("p", "Be brief.", "prefix")])
    assert [r.name for r in rows] == ["p"] and list(curves) == ["p"]


def test_beating_another_entry_is_said_only_outside_two_standard_errors():
    from steering_core.measure.comparison import beats_phrase

    assert beats_phrase(0.30, 0.02, 0.10, 0.02) == "beats it"
    assert beats_phrase(0.10, 0.02, 0.30, 0.02, "the prompt") == "does not beat the prompt"
    assert beats_phrase(0.22, 0.05, 0.17, 0.05) == "is within noise of it (+0.05 ± 0.07)"
    assert beats_phrase(float("nan"), 0.1, 0.2, 0.1) == "cannot be compared with it"
    # one rollout on a side: no SE, so a gap is never called a win over noise without saying so
    assert beats_phrase(0.22, float("nan"), 0.17, 0.05) == "beats it (untested against noise: one rollout)"
    # helper audit: two exact zeros (± 0) read "does not beat", while a small gap read "within noise"
    assert beats_phrase(0.0, 0.0, 0.0, 0.0) == "ties with it"


def test_the_table_says_which_peaks_are_no_useful_alpha_and_how_each_stands_against_the_prompt():
    """Audit: the Compare table ranked a peak of 0.005 ± 0.005 first, under raw column names, with
    no word that no entry had a useful α or how the vectors stood against the prompting row."""
    from steering_core.measure.comparison import ComparisonRow, summary_rows

    def curve(*products):
        return [AlphaPoint(a, {"product": v, "product_se": 0.02, "keywords_se": 0.03, "coherence_se": 0.01})
                for a, v in zip((0.0, 20.0, 40.0), products)]

    curves = {"good": curve(0.0, 0.45, 0.30), "faint": curve(0.0, 0.005, 0.004), "flat": curve(0.2, 0.1, 0.05),
              "prompt: Be nice.": [AlphaPoint(0.0, {"product": 0.41, "product_se": 0.02, "coherence_se": 0.01})]}
    rows = [ComparisonRow("good", 3, 20.0, 0.45, 20.0, 0.5, 0.9, peak_product_se=0.02),
            ComparisonRow("prompt: Be nice.", None, float("nan"), 0.41, float("nan"), 0.5, 0.82, kind="prompt",
                          instruction="Be nice.", peak_product_se=0.02),
            ComparisonRow("flat", 3, 20.0, 0.2, 0.0, 0.2, 1.0, peak_product_se=0.02),
            ComparisonRow("faint", 3, 20.0, 0.005, 20.0, 0.01, 0.5, peak_product_se=0.02)]
    table = {r["name"]: r for r in summary_rows(rows, curves)}
    assert [r["verdict"] for r in table.values()] == [
        "useful α", "prompting baseline", "no useful α (best at α = 0)", "no useful α (peak below 0.10)"]
    against = "against prompt: Be nice."
    assert table["good"][against] == "is within noise of it (+0.04 ± 0.03)"  # 0.04 < 2 · 0.028
    assert table["faint"][against] == "does not beat it" and table["prompt: Be nice."][against] == ""
    assert table["good"]["peak keywords × coherence"] == 0.45 and table["good"]["±"] == 0.02
    assert table["prompt: Be nice."]["α at peak"] is None
    # helper audit: behaviour and coherence at the peak came without their ±
    assert list(table["good"])[:5] == ["name", "peak keywords × coherence", "±", "verdict", against]
    assert table["good"]["± keywords"] == 0.03 and table["good"]["± coherence"] == 0.01
    assert table["prompt: Be nice."]["± coherence"] == 0.01
    assert against not in summary_rows(rows[:1], curves)[0]  # no prompting row: no such column
