"""Feature effects (steering_core.measure.effects): the batched in-generation measurement equals the
paper's generate-then-re-run loop, exactly where it must, on both backends."""

from __future__ import annotations

import statistics

import pytest
import torch

from steering_core import GenerationConfig, generate, random_unit_vector, record_residuals
from steering_core.errors import SteeringError
from steering_core.measure.effects import (
    EffectSpec,
    baseline_rows,
    measure_baseline,
    measure_effects,
    measure_effects_naive,
    paired_estimate,
    relative_effect,
    stratified_mean,
    top_effects,
    twin_rows,
)
from steering_core.model.recording import recording
from steering_core.model.saes import tiny_sae

PROMPTS = ["I think", "Breaking news", "Once upon a time"]
LAYER = 1


pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(**kw) -> EffectSpec:
    args = dict(prompts=list(PROMPTS), new_tokens=4, rollouts_per_prompt=1, baseline_rollouts_per_prompt=2, max_rows=9)
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
    spec = _spec(rollouts_per_prompt=1)
    assert spec.vectors_per_call == 3  # 5 vectors → two generate calls (3 + 2)
    vecs = torch.stack([sae.decoder_direction(i) for i in range(5)])
    alphas = torch.tensor([0.5, 1.0, -0.5, 0.75, 0.25]) * tiny.residual_norms()[LAYER]
    rows = baseline_rows(tiny, sae, LAYER, spec)
    batched = measure_effects(tiny, sae, LAYER, vecs, alphas, spec, rows).effect
    naive = measure_effects_naive(tiny, sae, LAYER, vecs, alphas, spec, twin_rows(rows, spec).mean(0))
    assert batched.shape == naive.shape == (5, sae.d_sae)
    assert batched.abs().max() > 0.1  # steering measurably moves features
    assert torch.allclose(batched, naive, atol=1e-4)


def test_rows_beyond_max_rows_split_over_calls_and_equal_naive(tiny_hf, saes):
    sae = _sae(saes, tiny_hf)
    spec = _spec(rollouts_per_prompt=2, max_rows=4)  # 6 rows per vector, 4 per call
    vecs = torch.stack([sae.decoder_direction(i) for i in (5, 6)])
    rows = baseline_rows(tiny_hf, sae, LAYER, spec)
    a = 0.5 * tiny_hf.residual_norms()[LAYER]
    steps = []
    est = measure_effects(tiny_hf, sae, LAYER, vecs, a, spec, rows, on_step=lambda k, n: steps.append((k, n)))
    assert torch.allclose(est.effect, measure_effects_naive(tiny_hf, sae, LAYER, vecs, a, spec,
                                                            twin_rows(rows, spec).mean(0)), atol=1e-4)
    assert steps[-1][0] == steps[-1][1] and len({n for _, n in steps}) == 1  # one bar per vector


def test_baseline_split_across_calls_is_the_row_weighted_mean(tiny, saes):
    sae = _sae(saes, tiny)
    one_call = measure_baseline(tiny, sae, LAYER, _spec(max_rows=9))  # 6 rows at once
    split = measure_baseline(tiny, sae, LAYER, _spec(max_rows=4))  # 4 + 2 rows
    assert one_call.shape == (sae.d_sae,) and one_call.abs().max() > 0
    assert torch.allclose(one_call, split, atol=1e-5)


def test_zero_alpha_effect_is_exactly_zero_with_zero_error(tiny, saes):
    """The twins of a zero-α row are the same rollout: the effect and its SE are 0, not noise."""
    sae = _sae(saes, tiny)
    spec = _spec(rollouts_per_prompt=2, baseline_rollouts_per_prompt=2, max_rows=6)
    rows = baseline_rows(tiny, sae, LAYER, spec)
    assert rows.abs().max() > 0  # a non-trivial baseline
    est = measure_effects(tiny, sae, LAYER, sae.decoder_direction(0)[None], 0.0, spec, rows)
    assert est.effect.abs().max() == 0 and est.se.abs().max() == 0


def test_steered_twins_share_most_tokens_at_small_alpha(tiny, saes):
    """Coupled sampling: at a small α most generated tokens equal the unsteered twin's."""
    v = _sae(saes, tiny).decoder_direction(3)
    cfg = GenerationConfig(max_new_tokens=8, stop_at_eos=False)
    seeds = list(range(30))
    prompts = [PROMPTS[i % 3] for i in range(30)]
    plain = generate(tiny, prompts, cfg, row_seeds=seeds).token_ids
    small = generate(tiny, prompts, cfg, steering=[(LAYER, v, 0.05 * tiny.residual_norms()[LAYER])],
                     row_seeds=seeds).token_ids
    same = sum(a == b for p, s in zip(plain, small) for a, b in zip(p, s)) / (30 * 8)
    assert same > 0.8


def test_effects_are_deterministic(tiny, saes):
    sae = _sae(saes, tiny)
    spec = _spec(rollouts_per_prompt=2)
    vecs = torch.stack([sae.decoder_direction(i) for i in range(4)])
    a = 0.5 * tiny.residual_norms()[LAYER]
    b1 = baseline_rows(tiny, sae, LAYER, spec, seed=3)
    b2 = baseline_rows(tiny, sae, LAYER, spec, seed=3)
    assert torch.equal(b1, b2)
    e1 = measure_effects(tiny, sae, LAYER, vecs, a, spec, b1, seed=3)
    e2 = measure_effects(tiny, sae, LAYER, vecs, a, spec, b2, seed=3)
    assert torch.equal(e1.effect, e2.effect) and torch.equal(e1.se, e2.se)
    # a different seed draws different rollouts
    e3 = measure_effects(tiny, sae, LAYER, vecs, a, spec, baseline_rows(tiny, sae, LAYER, spec, seed=4), seed=4)
    assert not torch.equal(e1.effect, e3.effect)


def test_baseline_needs_a_twin_for_every_steered_row(tiny, saes):
    with pytest.raises(SteeringError, match="unsteered twin"):
        baseline_rows(tiny, _sae(saes, tiny), LAYER, _spec(rollouts_per_prompt=3, baseline_rollouts_per_prompt=2))
    spec = _spec(rollouts_per_prompt=1, baseline_rollouts_per_prompt=1)
    with pytest.raises(SteeringError, match="baseline has 2 rows"):
        twin_rows(torch.zeros(2, 5), spec)


def test_paired_standard_error_matches_a_hand_computation():
    """Planted: 2 prompts × 3 rollouts, one feature. SE² = Σ_p var_p / n_p / P²."""
    steered = torch.tensor([[1.0, 2.0, 4.0, 10.0, 10.0, 13.0]]).unsqueeze(-1)  # [1 vector, 6 rows, 1]
    twins = torch.tensor([0.0, 1.0, 1.0, 9.0, 8.0, 10.0]).unsqueeze(-1)
    est = paired_estimate(steered, twins, n_prompts=2)
    d1, d2 = [1.0, 1.0, 3.0], [1.0, 2.0, 3.0]
    mean = (sum(d1) + sum(d2)) / 6

    def var(x):
        m = sum(x) / len(x)
        return sum((v - m) ** 2 for v in x) / (len(x) - 1)

    se = ((var(d1) / 3 + var(d2) / 3) ** 0.5) / 2
    assert est.effect.item() == pytest.approx(mean) and est.se.item() == pytest.approx(se)
    # one rollout per prompt: the spread over all rows
    one = paired_estimate(steered[:, [0, 3]], twins[[0, 3]], n_prompts=2)
    assert one.se.item() == pytest.approx(float(torch.tensor([1.0, 1.0]).std() / 2 ** 0.5))


def test_stratified_mean_of_plain_rows_matches_a_hand_computation():
    """The baseline activation's ± uses the same within-prompt SE as the effects, on unpaired rows."""
    rows = torch.tensor([[0.0, 1.0, 5.0, 2.0, 2.0, 8.0]]).unsqueeze(-1)  # 2 prompts × 3 rollouts
    est = stratified_mean(rows, n_prompts=2)
    se = ((statistics.variance([0.0, 1.0, 5.0]) / 3 + statistics.variance([2.0, 2.0, 8.0]) / 3) ** 0.5) / 2
    assert est.effect.item() == pytest.approx(3.0) and est.se.item() == pytest.approx(se)
    with pytest.raises(SteeringError, match="cannot be 4 prompts"):
        stratified_mean(rows, n_prompts=4)


def test_standard_errors_cover_the_spread_of_repeated_measurements(tiny, saes):
    """Calibration: across independent seeds, effects scatter about as their SEs say."""
    sae = _sae(saes, tiny)
    spec = _spec(rollouts_per_prompt=4, baseline_rollouts_per_prompt=4, max_rows=48)
    v = sae.decoder_direction(2)[None]
    a = 0.6 * tiny.residual_norms()[LAYER]
    runs = [measure_effects(tiny, sae, LAYER, v, a, spec, baseline_rows(tiny, sae, LAYER, spec, seed=s), seed=s)
            for s in range(12)]
    eff = torch.stack([r.effect[0] for r in runs])
    se = torch.stack([r.se[0] for r in runs]).mean(0)
    moving = se > 1e-3
    ratio = eff.std(0)[moving] / se[moving]
    assert moving.sum() >= 5 and 0.5 < float(ratio.median()) < 2.0


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
    (3, 1, 9, 3), (3, 1, 10, 3), (3, 2, 9, 1), (3, 2, 12, 2), (14, 1, 256, 18), (14, 16, 224, 1), (5, 4, 3, 1),
    (1, 1, 1, 1),
])
def test_vectors_per_call(n_prompts, rollouts, max_rows, expected):
    spec = EffectSpec(prompts=[f"p{i}" for i in range(n_prompts)], rollouts_per_prompt=rollouts, max_rows=max_rows)
    assert spec.rows_per_vector == n_prompts * rollouts
    assert spec.vectors_per_call == expected == max(1, max_rows // (n_prompts * rollouts))
    assert EffectSpec().to_dict()["max_rows"] == 224 == EffectSpec().rows_per_vector  # one vector per call


def test_the_last_token_runs_only_through_the_read_block_and_changes_nothing(tiny, saes):
    """The effect measurement reads each generated token's residual at block l, so the last token is
    fed through blocks ≤ l only (``last_through``): the per-row feature means are bit for bit those
    of feeding it through a whole extra step, and the blocks after l run one time fewer."""
    from steering_core.measure.effects import row_feature_means, row_plan
    from steering_core.model.steering import steering

    sae = _sae(saes, tiny)
    spec = _spec(rollouts_per_prompt=2)
    prompts, seeds, _ = row_plan(spec, 2, 0)
    st = steering(tiny, (LAYER, sae.decoder_direction(3), 0.8 * tiny.residual_norms()[LAYER]))
    last = tiny.backend.layer_module(tiny.n_layers - 1)
    calls = []
    handle = last.register_forward_hook(lambda *_: calls.append(1))
    try:
        new = row_feature_means(tiny, sae, LAYER, prompts, seeds, spec, st)
        n_new = len(calls)
        calls.clear()
        cfg = GenerationConfig(max_new_tokens=spec.new_tokens + 1, temperature=spec.temperature, top_k=spec.top_k,
                               stop_at_eos=False)
        with recording(tiny, [LAYER], before_steering=True) as chunks:  # the old way: a whole extra step
            generate(tiny, prompts, cfg, steering=st, row_seeds=seeds, share_prefill=True)
        n_old = len(calls)
    finally:
        handle.remove()
    x = torch.cat(chunks[LAYER][1:], 1).float()
    with torch.no_grad():
        old = sae.encode(x.reshape(-1, x.shape[-1])).float().reshape(x.shape[0], x.shape[1], -1).mean(1)
    assert torch.equal(new, old)
    assert (n_new, n_old) == (spec.new_tokens, spec.new_tokens + 1)  # prefill + steps; the last stops at block l
