"""The generic response (steering_core.measure.generic): planted examples with known answers."""

from __future__ import annotations

import pytest
import torch

from steering_core.measure.generic import (
    generic_response,
    self_in_top,
    specific_effect,
    top_overlap,
    within_noise,
)


def test_generic_response_is_the_mean_with_its_standard_error_and_hub_shares():
    eff = torch.tensor([[3.0, 0.0, 1.0, 0.5],
                        [5.0, 1.0, 0.0, 0.5],
                        [4.0, 2.0, 0.0, -0.5]])
    g = generic_response(eff, top=1)
    assert torch.allclose(g.mean, torch.tensor([4.0, 1.0, 1 / 3, 1 / 6]))
    assert torch.allclose(g.se, eff.std(0) / 3 ** 0.5)
    assert torch.allclose(g.hub_share, torch.tensor([1.0, 0.0, 0.0, 0.0]))  # target 0 tops every direction
    assert g.hubs(0.5).tolist() == [True, False, False, False]
    g2 = generic_response(eff, top=2)
    assert torch.allclose(g2.hub_share, torch.tensor([1.0, 2 / 3, 1 / 3, 0.0]))


def test_specific_effect_subtracts_exactly_and_adds_errors_in_quadrature():
    eff = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    se = torch.rand(5, 7, generator=torch.Generator().manual_seed(1))
    g = generic_response(torch.randn(9, 7, generator=torch.Generator().manual_seed(2)))
    spec, spec_se = specific_effect(eff, se, g)
    assert torch.equal(spec, eff - g.mean)
    assert torch.allclose(spec_se, (se ** 2 + g.se ** 2).sqrt())
    # a feature whose effect *is* the generic response has no specific effect
    assert torch.equal(specific_effect(g.mean[None], torch.zeros(1, 7), g)[0], torch.zeros(1, 7))


def test_overlap_self_rank_and_noise_filter():
    a = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
    b = torch.tensor([[5.0, 0, 3, 2, 1, 4], [0, 1, 2, 3, 4, 5]])
    assert top_overlap(a, b, k=3) == [2, 3]
    assert self_in_top(a, [0, 1], k=2) == pytest.approx(0.5)  # row 0 ranks target 0 first; row 1 not target 1
    assert self_in_top(a, [], k=2) == 0.0
    assert within_noise(torch.tensor([0.1, -0.5, 1.0]), torch.tensor([0.1, 0.2, 0.6])).tolist() == [True, False, True]
