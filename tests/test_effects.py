"""Feature effects (steering_core.measure.effects): the batched in-generation measurement equals the
paper's generate-then-re-run loop, exactly where it must, on both backends."""

from __future__ import annotations

import pytest
import torch

from steering_core import GenerationConfig, generate, random_unit_vector, record_residuals
from steering_core.measure.effects import (
    EffectSpec,
    measure_baseline,
    measure_effects,
    measure_effects_naive,
    relative_effect,
    top_effects,
)
from steering_core.model.saes import tiny_sae
from steering_core.model.steering import recording

PROMPTS = ["I think", "Breaking news", "Once upon a time"]
LAYER = 1


pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(**kw) -> EffectSpec:
    args = dict(prompts=list(PROMPTS), new_tokens=4, baseline_rollouts_per_prompt=2, max_rows=9)
    args.update(kw)
    return EffectSpec(**args)


@pytest.fixture(scope="module")
def saes(tiny_hf, tiny_tl):
    return {id(m): tiny_sae(m, LAYER, d_sae=32, seed=0, k=4) for m in (tiny_hf, tiny_tl)}


def _sae(saes, model):
    return saes[id(model)]


# ----------------------------------------------------------------------------------------------
# recording(): residuals read during generation
# ----------------------------------------------------------------------------------------------


def test_recording_before_steering_equals_unsteered_rerun(tiny):
    layer, n_new = LAYER, 5
    v = random_unit_vector(tiny.d_model, seed=3)
    alpha = tiny.residual_norms()[layer]  # large enough to change what is generated
    seeds = [11, 12, 13]
    cfg = GenerationConfig(max_new_tokens=n_new + 1, stop_at_eos=False)
    with recording(tiny, [layer], before_steering=True) as chunks:
        res = generate(tiny, PROMPTS, cfg, steering=[(layer, v, alpha)], row_seeds=seeds)
    plain = generate(tiny, PROMPTS, cfg, row_seeds=seeds)
    assert res.token_ids != plain.token_ids  # the steering really changed the rollouts

    ids, mask = tiny.tokenize(PROMPTS)
    # one chunk per forward call: the prefill, then one per decoding step but the last
    assert len(chunks[layer]) == n_new + 1
    assert chunks[layer][0].shape == (len(PROMPTS), ids.shape[1], tiny.d_model)
    assert all(c.shape == (len(PROMPTS), 1, tiny.d_model) for c in chunks[layer][1:])

    gen = torch.tensor([t[:n_new] for t in res.token_ids], dtype=ids.dtype)
    full_ids = torch.cat([ids, gen], 1)
    full_mask = torch.cat([mask, torch.ones_like(gen)], 1)
    ref = record_residuals(tiny, full_ids, full_mask, [layer])[layer]  # no steering

    steps = torch.cat(chunks[layer][1:], 1)
    assert torch.allclose(steps, ref[:, ids.shape[1]:], atol=1e-4)
    keep = mask.bool()
    assert torch.allclose(chunks[layer][0][keep], ref[:, : ids.shape[1]][keep], atol=1e-4)


def test_recording_after_steering_differs_by_alpha_v(tiny):
    layer = LAYER
    v = random_unit_vector(tiny.d_model, seed=4)
    alpha = 7.5
    cfg = GenerationConfig(max_new_tokens=4, stop_at_eos=False)
    with recording(tiny, [layer], before_steering=True) as before, \
            recording(tiny, [layer], before_steering=False) as after:
        res = generate(tiny, PROMPTS, cfg, steering=[(layer, v, alpha)], row_seeds=[1, 2, 3])
    assert len(before[layer]) == len(after[layer]) == 4
    for b, a in zip(before[layer], after[layer]):
        assert torch.allclose(a - b, (alpha * v).expand_as(a), atol=1e-5)

    # and against an independent unsteered re-run of the same tokens
    ids, mask = tiny.tokenize(PROMPTS)
    gen = torch.tensor([t[:3] for t in res.token_ids], dtype=ids.dtype)
    ref = record_residuals(tiny, torch.cat([ids, gen], 1), torch.cat([mask, torch.ones_like(gen)], 1), [layer])[layer]
    steps_after = torch.cat(after[layer][1:], 1)
    assert torch.allclose(steps_after - ref[:, ids.shape[1]:], (alpha * v).expand_as(steps_after), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# measure_effects
# ----------------------------------------------------------------------------------------------


def test_batched_effects_equal_naive_loop(tiny, saes):
    sae = _sae(saes, tiny)
    spec = _spec()
    assert spec.vectors_per_call == 3  # 5 vectors → two generate calls (3 + 2)
    vecs = torch.stack([sae.decoder_direction(i) for i in range(5)])
    alphas = torch.tensor([0.5, 1.0, -0.5, 0.75, 0.25]) * tiny.residual_norms()[LAYER]
    base = measure_baseline(tiny, sae, LAYER, spec)
    batched = measure_effects(tiny, sae, LAYER, vecs, alphas, spec, base)
    naive = measure_effects_naive(tiny, sae, LAYER, vecs, alphas, spec, base)
    assert batched.shape == naive.shape == (5, sae.d_sae)
    assert batched.abs().max() > 0.1  # steering measurably moves features
    assert torch.allclose(batched, naive, atol=1e-4)


def test_batched_effects_with_scalar_alpha_equal_naive(tiny_hf, saes):
    sae = _sae(saes, tiny_hf)
    spec = _spec(max_rows=4)  # vectors_per_call = 1
    vecs = torch.stack([sae.decoder_direction(i) for i in (5, 6)])
    base = measure_baseline(tiny_hf, sae, LAYER, spec)
    a = 0.5 * tiny_hf.residual_norms()[LAYER]
    assert torch.allclose(measure_effects(tiny_hf, sae, LAYER, vecs, a, spec, base),
                          measure_effects_naive(tiny_hf, sae, LAYER, vecs, a, spec, base), atol=1e-4)


def test_baseline_split_across_calls_is_the_row_weighted_mean(tiny, saes):
    sae = _sae(saes, tiny)
    one_call = measure_baseline(tiny, sae, LAYER, _spec(max_rows=9))  # 6 rows at once
    split = measure_baseline(tiny, sae, LAYER, _spec(max_rows=4))  # 4 + 2 rows
    assert one_call.shape == (sae.d_sae,) and one_call.abs().max() > 0
    assert torch.allclose(one_call, split, atol=1e-5)


def test_zero_alpha_effect_is_zero(tiny, saes):
    sae = _sae(saes, tiny)
    # baseline with exactly the rollouts the steered measurement draws
    spec = _spec(baseline_rollouts_per_prompt=1, rollouts_per_prompt=1, max_rows=3)
    base = measure_baseline(tiny, sae, LAYER, spec)
    assert base.abs().max() > 0  # a non-trivial baseline
    v = sae.decoder_direction(0)[None]
    eff = measure_effects(tiny, sae, LAYER, v, 0.0, spec, base)
    assert eff.abs().max() <= 1e-6

    # several zero-α vectors sharing one batch (9 rows vs the baseline's 3): same rollouts, so
    # zero up to float32 rounding of a differently shaped batch
    spec9 = _spec(baseline_rollouts_per_prompt=1, max_rows=9)
    vecs = torch.stack([sae.decoder_direction(i) for i in range(5)])
    eff = measure_effects(tiny, sae, LAYER, vecs, torch.zeros(5), spec9, measure_baseline(tiny, sae, LAYER, spec9))
    assert eff.abs().max() <= 1e-5 * max(1.0, float(base.abs().max()))


def test_effects_are_deterministic(tiny, saes):
    sae = _sae(saes, tiny)
    spec = _spec()
    vecs = torch.stack([sae.decoder_direction(i) for i in range(4)])
    a = 0.5 * tiny.residual_norms()[LAYER]
    b1 = measure_baseline(tiny, sae, LAYER, spec, seed=3)
    b2 = measure_baseline(tiny, sae, LAYER, spec, seed=3)
    assert torch.equal(b1, b2)
    e1 = measure_effects(tiny, sae, LAYER, vecs, a, spec, b1, seed=3)
    e2 = measure_effects(tiny, sae, LAYER, vecs, a, spec, b2, seed=3)
    assert torch.equal(e1, e2)
    # a different seed draws different rollouts
    e3 = measure_effects(tiny, sae, LAYER, vecs, a, spec, b1, seed=4)
    assert not torch.equal(e1, e3)


# ----------------------------------------------------------------------------------------------
# pure helpers
# ----------------------------------------------------------------------------------------------


def test_top_effects_are_largest_magnitudes():
    g = torch.Generator().manual_seed(0)
    eff = torch.randn(6, 40, generator=g)
    for k in (1, 5, 40, 100):
        idx, vals = top_effects(eff, k=k)
        kk = min(k, 40)
        assert idx.shape == vals.shape == (6, kk)
        ref_abs, ref_idx = eff.abs().sort(dim=-1, descending=True)
        assert torch.equal(vals.abs(), ref_abs[:, :kk])
        assert torch.equal(idx, ref_idx[:, :kk])  # no ties in random normals
        assert torch.equal(vals, eff.gather(-1, idx))  # signed values, not magnitudes
    assert (top_effects(eff, k=5)[1] < 0).any()


def test_relative_effect():
    g = torch.Generator().manual_seed(1)
    eff = torch.randn(4, 10, generator=g)
    base = torch.rand(10, generator=g)
    base[0] = 0.0
    assert torch.allclose(relative_effect(eff, base), eff / (base[None] + 1e-2))
    assert torch.allclose(relative_effect(eff, base, eps=0.5), eff / (base[None] + 0.5))
    assert torch.allclose(relative_effect(eff, base)[:, 0], eff[:, 0] * 100)


@pytest.mark.parametrize("n_prompts,rollouts,max_rows,expected", [
    (3, 1, 9, 3), (3, 1, 10, 3), (3, 2, 9, 1), (3, 2, 12, 2), (14, 1, 256, 18), (5, 4, 3, 1), (1, 1, 1, 1),
])
def test_vectors_per_call(n_prompts, rollouts, max_rows, expected):
    spec = EffectSpec(prompts=[f"p{i}" for i in range(n_prompts)], rollouts_per_prompt=rollouts, max_rows=max_rows)
    assert spec.rows_per_vector == n_prompts * rollouts
    assert spec.vectors_per_call == expected == max(1, max_rows // (n_prompts * rollouts))
    assert EffectSpec().to_dict()["max_rows"] == 256
