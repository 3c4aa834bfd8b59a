"""Held-out separation, layer sweep and data efficiency on planted activations."""

from __future__ import annotations

import math

import pytest
import torch

from steering_core.vectors.evaluation import (
    EvaluationError,
    data_efficiency,
    layer_sweep,
    pair_counts,
    separation,
    split_indices,
)
from steering_core.vectors.extraction import PairActivations


def planted(n=64, d=16, gap=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    neg = torch.randn(n, d, generator=g)
    pos = torch.randn(n, d, generator=g) + gap * u
    return pos, neg, u


def test_separation_along_the_planted_direction_and_across_it():
    pos, neg, u = planted()
    good = separation(u, pos, neg)
    assert good.pair_accuracy > 0.95 and good.projection_gap > 2.0
    ortho = torch.randn(16, generator=torch.Generator().manual_seed(1))
    ortho -= (ortho @ u) * u
    bad = separation(ortho, pos, neg)
    assert 0.3 < bad.pair_accuracy < 0.7 and abs(bad.projection_gap) < 0.5
    # the sign matters: the opposite direction separates the wrong way round
    assert separation(-u, pos, neg).pair_accuracy < 0.05
    # every accuracy comes with the pairs it was measured on and its 95 % interval
    from steering_core.measure.scores import wilson_interval

    assert good.n_pairs == len(pos)
    assert good.accuracy_interval == wilson_interval(good.pair_accuracy * len(pos), len(pos))
    assert good.accuracy_interval[0] < good.pair_accuracy <= good.accuracy_interval[1]


def test_d_prime_carries_a_bootstrap_interval_over_pairs_equal_to_a_hand_loop():
    """Audit: the layer sweep drew d′ bare, the one figure on the Vectors page without an uncertainty."""
    from steering_core.vectors.evaluation import gap_interval

    pos, neg, u = planted(n=24)
    pp, pn = pos @ u, neg @ u
    sep = separation(u, pos, neg)
    lo, hi = sep.gap_interval
    assert lo < sep.projection_gap < hi
    # the same seeded resamples, one at a time: percentile interval of d′ over pairs resampled whole
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 24, (300, 24), generator=g)
    gaps = []
    for row in idx:
        a, b = pp.double()[row], pn.double()[row]
        pooled = torch.cat([a - a.mean(), b - b.mean()]).std()
        gaps.append(float((a - b).mean() / pooled))
    want = torch.quantile(torch.tensor(gaps, dtype=torch.float64), torch.tensor([0.025, 0.975], dtype=torch.float64))
    got = gap_interval(pp, pn, resamples=300)
    assert got == pytest.approx((float(want[0]), float(want[1])), rel=1e-9)
    wide = separation(u, *planted(n=6)[:2]).gap_interval  # fewer pairs: a wider interval
    assert wide[1] - wide[0] > hi - lo
    assert all(math.isnan(x) for x in gap_interval(pp[:2], pn[:2]))  # 2 pairs: resampling says nothing


def test_split_uses_the_datasets_own_heldout_else_a_seeded_fraction():
    assert split_indices(10, heldout=[2, 5]) == ([0, 1, 3, 4, 6, 7, 8, 9], [2, 5])
    tr, te = split_indices(8, fraction=0.25, seed=1)
    assert len(te) == 2 and sorted(tr + te) == list(range(8))
    assert split_indices(8, fraction=0.25, seed=1) == (tr, te)
    with pytest.raises(EvaluationError, match="fewer than 2"):
        split_indices(1)


def test_layer_sweep_ranks_the_layer_that_carries_the_concept_first():
    pos, neg, _ = planted(n=48)
    noise_p, noise_n, _ = planted(n=48, gap=0.0, seed=5)
    acts = {1: PairActivations(1, "last", noise_p, noise_n), 2: PairActivations(2, "last", pos, neg)}
    tr, te = split_indices(48, fraction=0.25)
    scores = {s.layer: s for s in layer_sweep(acts, tr, te)}
    assert scores[2].pair_accuracy > 0.9 and scores[2].probe_accuracy > 0.8
    assert scores[1].pair_accuracy < 0.8 and scores[2].projection_gap > scores[1].projection_gap + 1


def test_pair_counts_double_up_to_the_training_size():
    assert pair_counts(40) == [4, 8, 16, 32, 40]
    assert pair_counts(16) == [4, 8, 16]
    assert pair_counts(3) == [3]


def test_data_efficiency_grows_with_pairs_and_respects_method_minimums():
    pos, neg, _ = planted(n=80, gap=1.0)
    pa = PairActivations(3, "last", pos, neg)
    tr, te = split_indices(80, fraction=0.25)
    pts = data_efficiency(pa, tr, te, ["caa", "probe"], repeats=4, counts=[1, 2, 4, 60])
    caa = {p.n_pairs: p for p in pts if p.method == "caa"}
    probe = {p.n_pairs for p in pts if p.method == "probe"}
    assert set(caa) == {1, 2, 4, 60} and probe == {4, 60}  # the probe needs 4 pairs
    assert caa[60].pair_accuracy > caa[1].pair_accuracy
    assert caa[60].repeats == 1 and caa[4].repeats == 4
    assert all(not math.isnan(p.pair_accuracy) for p in pts)
    with pytest.raises(EvaluationError, match="Unknown method"):
        data_efficiency(pa, tr, te, ["nope"])
