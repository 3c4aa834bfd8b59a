"""Reconstruction figures: explained variance equals the textbook formula, a few massive tokens
decide it and the typical-token figure does not move with them, and the bootstrap SE over
windows matches the spread of the figure across fresh draws of windows."""

from __future__ import annotations

import math

import pytest
import torch

from steering_core.measure.reconstruction import WindowTotals, bootstrap_se, explained_variance, variance_share
from steering_core.model.massive import massive_threshold


def _totals(x, xh, window, n_windows):
    t = WindowTotals.zeros(n_windows, x.shape[1])
    t.add(window, x, xh)
    return t


def _reference_ev(x, xh):
    x, xh = x.double(), xh.double()
    return float(1 - ((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def _windows(n_windows, per_window, d, noise, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_windows * per_window, d, generator=g) + 3.0  # an offset: the mean must come out
    xh = x + noise * torch.randn(x.shape, generator=g)
    window = torch.arange(n_windows).repeat_interleave(per_window)
    return x, xh, window


def test_explained_variance_equals_the_formula_whatever_order_tokens_arrive_in():
    x, xh, window = _windows(12, 9, 16, 0.5, 0)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    t = WindowTotals.zeros(12, 16)
    for part in perm.split(25):  # folded in out of order, in batches
        t.add(window[part], x[part], xh[part])
    assert explained_variance(t) == pytest.approx(_reference_ev(x, xh), abs=1e-12)
    assert t.tokens == len(x)
    assert math.isnan(explained_variance(WindowTotals.zeros(3, 16)))


def test_one_massive_token_decides_the_all_token_figure_and_not_the_typical_one():
    x, xh, window = _windows(20, 10, 16, 0.7, 2)  # about half the typical variance is explained
    x[7], xh[7] = 2000.0, 2000.0  # an attention sink: huge, and reconstructed exactly
    norms = x.norm(dim=1)
    cut = massive_threshold(norms)
    keep = norms <= cut
    assert int((~keep).sum()) == 1 and not bool(keep[7])
    every = _totals(x, xh, window, 20)
    typical = _totals(x[keep], xh[keep], window[keep], 20)
    assert explained_variance(every) > 0.999
    assert explained_variance(typical) == pytest.approx(_reference_ev(x[keep], xh[keep]), abs=1e-12)
    assert 0.3 < explained_variance(typical) < 0.7
    # the sink's share of the variance, against a direct computation about the all-token mean
    dev = ((x.double() - x.double().mean(0)) ** 2).sum(1)
    share = variance_share(every.minus(typical), every)
    assert share == pytest.approx(float(dev[7] / dev.sum()), rel=1e-9)
    assert share > 0.99


def test_the_threshold_follows_the_median_norm():
    norms = torch.tensor([1.0, 2.0, 3.0, 100.0])
    assert massive_threshold(norms) == pytest.approx(20.0)  # 10 × the (lower) median, 2
    assert massive_threshold(norms, factor=4) == pytest.approx(8.0)
    assert massive_threshold(torch.zeros(0)) == math.inf


def test_bootstrap_se_matches_the_spread_over_fresh_draws_of_windows():
    # windows differ from each other (a per-window scale), so the figure varies with which are drawn
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        scale = torch.rand(40, 1, generator=g) * 2 + 0.2
        x = torch.randn(40 * 8, 8, generator=g) * scale.repeat_interleave(8, 0)
        xh = x + 0.7 * torch.randn(x.shape, generator=g)
        return _totals(x, xh, torch.arange(40).repeat_interleave(8), 40)

    spread = torch.tensor([explained_variance(draw(s)) for s in range(200)]).std().item()
    se = torch.tensor([bootstrap_se(draw(s)) for s in range(5)]).median().item()
    assert 0.7 < se / spread < 1.4


def test_bootstrap_se_needs_two_windows():
    x, xh, _ = _windows(1, 10, 4, 0.5, 3)
    assert math.isnan(bootstrap_se(_totals(x, xh, torch.zeros(10, dtype=torch.long), 3)))
