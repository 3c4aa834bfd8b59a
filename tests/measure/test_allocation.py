"""Adaptive allocation (steering_core.measure.allocation): the contested count on planted effects,
pooling against a hand computation, and a top-up that continues an earlier measurement so that the
pooled effect is the larger budget's effect."""

from __future__ import annotations

import pytest
import torch

from steering_core.errors import SteeringError
from steering_core.measure.allocation import contested_targets, needs_topup, pool, top_boundary, topup_threshold
from steering_core.measure.effects import (
    EffectEstimate,
    EffectSpec,
    baseline_rows,
    measure_effects,
    row_plan,
    twin_rows,
)
from steering_core.model.saes import tiny_sae
from steering_core.model.steering import random_unit_vector

pytestmark = pytest.mark.usefixtures("one_thread")
LAYER = 1


def test_contested_counts_targets_near_the_top_boundary():
    # 12 targets: effects 12, 11, …, 1; the 10th is 3, the 11th 2, so the boundary is 2.5
    effect = torch.arange(12, 0, -1, dtype=torch.float32).unsqueeze(0)
    assert top_boundary(effect).item() == 2.5
    # SE 0.3: within 0.6 of 2.5 → only 3 and 2 are contested
    assert contested_targets(effect, torch.full_like(effect, 0.3)).tolist() == [2]
    # SE 1: within 2 → 4, 3, 2, 1 (|x − 2.5| < 2)
    assert contested_targets(effect, torch.ones_like(effect)).tolist() == [4]
    # a per-target SE: only the SE of each target counts for it
    se = torch.zeros_like(effect)
    se[0, 0] = 10.0  # the top target is uncertain enough to fall out
    assert contested_targets(effect, se).tolist() == [1]
    two = torch.cat([effect, effect])
    assert needs_topup(two, torch.stack([torch.full((12,), 0.3), torch.ones(12)]), over=3).tolist() == [False, True]


def test_a_share_cap_raises_the_threshold_and_keeps_ties_together():
    counts = torch.tensor([5, 40, 31, 31, 31, 50, 12, 33, 35, 29])
    assert topup_threshold(counts, 30) == 30  # no cap: 7 of 10 exceed 30
    # at most half: 7 > 5, so the threshold rises; at 31 the three 31s drop out together (4 left)
    assert topup_threshold(counts, 30, share=0.5) == 31
    assert int((counts > 31).sum()) == 4
    assert topup_threshold(counts, 30, share=0.2) == 35  # 40 and 50 remain
    assert topup_threshold(counts, 30, share=0.05) == 50  # none may: above the largest count
    assert topup_threshold(counts, 45, share=0.5) == 45  # a cap never lowers the threshold
    with pytest.raises(SteeringError, match="share"):
        topup_threshold(counts, 30, share=0.0)


def test_a_top_boundary_needs_more_targets_than_the_list():
    with pytest.raises(SteeringError, match="more than 10 targets"):
        top_boundary(torch.zeros(1, 10))


def test_pool_weights_by_rollouts_and_combines_the_errors():
    a = EffectEstimate(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.4, 0.2]]))
    b = EffectEstimate(torch.tensor([[4.0, 0.0]]), torch.tensor([[0.3, 0.6]]))
    p = pool(a, 1, b, 3)
    # effect: (1·a + 3·b) / 4;  SE: √((1·se_a)² + (3·se_b)²) / 4
    assert p.effect[0].tolist() == pytest.approx([(1 + 12) / 4, -2 / 4])
    assert p.se[0].tolist() == pytest.approx([(0.4 ** 2 + 0.9 ** 2) ** 0.5 / 4, (0.2 ** 2 + 1.8 ** 2) ** 0.5 / 4])
    with pytest.raises(SteeringError, match="rollouts on both sides"):
        pool(a, 0, b, 3)


def test_a_continued_plan_is_the_tail_of_the_larger_plan():
    spec = EffectSpec(prompts=["a", "b"], rollouts_per_prompt=2, baseline_rollouts_per_prompt=5)
    full = row_plan(spec, 5, seed=3)
    tail = row_plan(spec, 3, seed=3, first=2)
    assert tail[1] == [s for i, s in enumerate(full[1]) if i % 5 >= 2]  # same seeds, same order
    assert tail[0] == ["a"] * 3 + ["b"] * 3
    base = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    assert twin_rows(base, EffectSpec(prompts=["a", "b"], rollouts_per_prompt=3, baseline_rollouts_per_prompt=5),
                     first=2).flatten().tolist() == [2, 3, 4, 7, 8, 9]
    with pytest.raises(SteeringError, match="at least 6"):
        twin_rows(base, EffectSpec(prompts=["a", "b"], rollouts_per_prompt=3, baseline_rollouts_per_prompt=5), first=3)


def test_topping_up_gives_the_larger_budgets_effect(tiny_hf):
    """Rollouts 0–1 then 2–3 of each prompt, pooled, equal one measurement on rollouts 0–3: same
    effect (both are the mean of the same paired differences), an SE of the same size."""
    sae = tiny_sae(tiny_hf, LAYER, d_sae=32, seed=0, k=4)
    prompts = ["I think", "Breaking news", "Once upon a time"]
    full = EffectSpec(prompts=prompts, new_tokens=4, rollouts_per_prompt=4, baseline_rollouts_per_prompt=4,
                      max_rows=24)
    rows = baseline_rows(tiny_hf, sae, LAYER, full, seed=5)
    vecs = torch.stack([random_unit_vector(tiny_hf.d_model, seed=s) for s in (1, 2)])
    alpha = float(tiny_hf.residual_norms()[LAYER])
    whole = measure_effects(tiny_hf, sae, LAYER, vecs, alpha, full, rows, seed=5)
    half = EffectSpec(**{**full.to_dict(), "rollouts_per_prompt": 2})
    first = measure_effects(tiny_hf, sae, LAYER, vecs, alpha, half, rows, seed=5)
    extra = measure_effects(tiny_hf, sae, LAYER, vecs, alpha, half, rows, seed=5, first=2)
    assert not torch.allclose(first.effect, extra.effect)  # the extra rollouts are new ones
    pooled = pool(first, 2, extra, 2)
    torch.testing.assert_close(pooled.effect, whole.effect, atol=1e-6, rtol=1e-5)
    ratio = pooled.se[whole.se > 1e-3] / whole.se[whole.se > 1e-3]
    assert 0.5 < ratio.median().item() < 1.5
