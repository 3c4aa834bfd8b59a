"""α sweeps on a tiny model: validation, scores, α = 0 as the coherence reference, the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steering_core import random_unit_vector
from steering_core.measure.sweep import (
    SweepCache,
    SweepError,
    SweepSpec,
    check_spec,
    run_sweep,
)
from steering_core.model.saes import tiny_sae


def _spec(**kw):
    base = dict(prompts=("hello", "the weather"), alphas=(-4.0, 4.0), samples=2, new_tokens=6, chat=False,
                keywords=("the", "a"))
    base.update(kw)
    return SweepSpec(**base)


@pytest.mark.parametrize("kw, message", [
    (dict(alphas=(1.0, float("nan"))), "finite"),
    (dict(alphas=(1e9,)), "residual norm"),
    (dict(alphas=()), "empty"),
    (dict(samples=0), "Samples"),
    (dict(keywords=("  ", "")), "keyword list is empty"),
    (dict(concept="   ", behaviour="similarity"), "only spaces"),
    (dict(prompts=("", "  ")), "prompt"),
    (dict(behaviour="similarity"), "not set up"),
])
def test_bad_requests_get_a_sentence(kw, message):
    with pytest.raises(SweepError, match=message):
        check_spec(_spec(**kw), residual_norm=10.0)


def test_grid_always_contains_zero_sorted_and_deduplicated():
    assert check_spec(_spec(alphas=(3, -1, 3)), 10.0).alphas == (-1.0, 0.0, 3.0)


def test_sweep_scores_and_zero_alpha_reference(tiny_hf, one_thread):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=32)
    v = random_unit_vector(tiny_hf.d_model, 1)
    big = 3 * tiny_hf.residual_norms()[1]
    pts = run_sweep(tiny_hf, v, 1, _spec(alphas=(-big, big), target_features=(0, 3)), sae=sae)
    assert [p.alpha for p in pts] == [-big, 0.0, big]
    zero = pts[1]
    assert zero.get("coherence") == 1.0 and abs(zero.get("dce")) < 1e-5
    assert all(len(p.samples) == 4 for p in pts)  # 2 prompts × 2 samples
    for p in pts:
        for name in ("keywords", "target", "loglik", "coherence", "product"):
            assert not math.isnan(p.get(name)), (p.alpha, name)
        assert 0.0 <= p.get("keywords") <= 1.0 and p.get("keywords_se") >= 0
    # a large α raises the loss on reference text and drags the rollouts away from what the
    # unsteered model finds likely
    assert min(pts[0].get("dce"), pts[2].get("dce")) > 0.01
    assert max(pts[0].get("coherence"), pts[2].get("coherence")) < 0.5
    assert np.isclose(pts[2].get("product"), pts[2].get("keywords") * pts[2].get("coherence"))


def test_sweep_is_cached_per_alpha_and_stopping_keeps_what_was_done(tiny_hf, tmp_path, monkeypatch, one_thread):
    import steering_core.measure.sweep as sw

    cache = SweepCache(tmp_path / "lib.duckdb")
    v = random_unit_vector(tiny_hf.d_model, 2)
    calls = []
    stop_after_one = lambda: len(calls) >= 1  # noqa: E731
    real = sw.measure_alpha

    def counted(*a, **k):
        calls.append(a[3])
        return real(*a, **k)

    monkeypatch.setattr(sw, "measure_alpha", counted)
    part = run_sweep(tiny_hf, v, 1, _spec(alphas=(-2.0, 2.0)), cache=cache, with_dce=False,
                     should_stop=stop_after_one)
    assert [p.alpha for p in part] == [-2.0] and calls == [-2.0]
    full = run_sweep(tiny_hf, v, 1, _spec(alphas=(-2.0, 2.0)), cache=cache, with_dce=False)
    assert calls == [-2.0, 0.0, 2.0]  # the first point came from the cache
    assert full[0].samples == part[0].samples
    # a finished sweep reopens without generating anything
    again = run_sweep(tiny_hf, v, 1, _spec(alphas=(2.0, -2.0)), cache=cache, with_dce=False)
    assert calls == [-2.0, 0.0, 2.0] and [p.get("keywords") for p in again] == [p.get("keywords") for p in full]
    cache.close()


def test_target_features_need_an_sae(tiny_hf):
    with pytest.raises(SweepError, match="SAE"):
        run_sweep(tiny_hf, random_unit_vector(tiny_hf.d_model, 0), 1, _spec(target_features=(1,)))


def test_concept_similarity_score_is_a_cosine(tiny_hf, one_thread):
    pts = run_sweep(tiny_hf, random_unit_vector(tiny_hf.d_model, 3), 1,
                    _spec(alphas=(1.0,), keywords=None, concept="weddings and brides", behaviour="similarity"),
                    with_dce=False)
    for p in pts:
        assert -1.0 <= p.get("similarity") <= 1.0 and p.get("similarity_se") >= 0
        assert "keywords" not in p.scores and 0.0 <= p.get("product") <= 1.0


def test_rollout_rows_are_prompt_major_with_a_distinct_seed_each(tiny_hf):
    from steering_core.measure.sweep import rollout_prompts, rollout_seeds

    rows = rollout_prompts(tiny_hf, _spec(chat=True))
    assert rows == [tiny_hf.format_prompt(p) for p in ("hello", "the weather") for _ in range(2)]
    assert rollout_prompts(tiny_hf, _spec()) == ["hello", "hello", "the weather", "the weather"]
    assert len(set(rollout_seeds(0, 2, 2))) == 4 and not set(rollout_seeds(0, 2, 2)) & set(rollout_seeds(1, 2, 2))
