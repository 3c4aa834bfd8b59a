"""Dataset → named vector, and the sweeps, on a tiny model with a shipped example dataset."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from steering_core.datasets import ContrastiveDataset, Pair, load_example
from steering_core.vectors.extraction import ActivationCache, pair_activations
from steering_core.vectors.fitting import FitRequest, fit_dataset, sweep_layers, sweep_pairs
from steering_core.vectors.methods import FitContext, FitError


@pytest.fixture(scope="module")
def wedding():
    return load_example("wedding_vs_neutral")


def test_fit_uses_the_training_split_and_records_where_the_vector_came_from(tiny_hf, wedding, tmp_path):
    cache = ActivationCache(tmp_path)
    seen = []
    res, vec = fit_dataset(tiny_hf, FitRequest(wedding, layer=1, method="caa", name="w1"), cache=cache,
                           on_progress=lambda d, t: seen.append((d, t)))
    train = wedding.train
    acts = pair_activations(tiny_hf, [p.positive for p in train], [p.negative for p in train], [1], cache=None)[1]
    assert torch.allclose(vec.direction, (acts.pos - acts.neg).mean(0), atol=1e-5)
    assert vec.name == "w1" and vec.layer == 1 and vec.method == "caa" and vec.dataset == wedding.name
    assert vec.model_id == tiny_hf.name and vec.meta["pairs_used"] == len(train)
    assert seen and seen[-1][0] == seen[-1][1] == 2 * len(train)


def test_ace_fit_gives_an_ace_vector(tiny_hf, wedding):
    _, vec = fit_dataset(tiny_hf, FitRequest(wedding, layer=2, method="ace"))
    assert vec.operator == "ace" and vec.reference is not None and vec.name == "wedding_vs_neutral-ace-L2"


def test_feature_methods_without_an_sae_say_so(tiny_hf, wedding):
    with pytest.raises(FitError, match="needs an SAE"):
        fit_dataset(tiny_hf, FitRequest(wedding, layer=1, method="feature_delta"), FitContext())


def test_sae_methods_refuse_pairs_from_another_block_before_extracting(tiny_hf, wedding):
    """Audit: a fit at block 0 with an SAE that reads block 1 encoded the wrong activations, with no
    word. Now it is refused before any activation is read; hand-picked decoder rows (no pairs
    encoded) may still go to any block."""
    from steering_core.model.saes import tiny_sae

    sae = tiny_sae(tiny_hf, 1, d_sae=32, k=4)
    seen = []
    for method in ("sae_features", "feature_delta"):
        with pytest.raises(FitError, match="reads block 1; activations of block 0 .* Fit at block 1"):
            fit_dataset(tiny_hf, FitRequest(wedding, layer=0, method=method), FitContext(sae=sae),
                        on_progress=lambda d, t: seen.append(d))
    assert seen == []
    _, vec = fit_dataset(tiny_hf, FitRequest(wedding, layer=0, method="sae_combo"),
                         FitContext(sae=sae, feature_weights={3: 1.0}))
    assert vec.layer == 0
    _, vec = fit_dataset(tiny_hf, FitRequest(wedding, layer=1, method="sae_features"), FitContext(sae=sae))
    assert vec.layer == 1 and vec.meta["features"]


def test_layer_sweep_scores_every_layer_on_heldout_pairs(tiny_hf, wedding):
    ticks = []
    scores = sweep_layers(tiny_hf, wedding, [0, 1, 2], on_progress=lambda d, t: ticks.append((d, t)))
    assert [s.layer for s in scores] == [0, 1, 2]
    assert all(0.0 <= s.pair_accuracy <= 1.0 and 0.0 <= s.probe_accuracy <= 1.0 for s in scores)
    assert ticks[-1][0] == ticks[-1][1]


def test_pair_sweep_has_a_point_per_count_and_method(tiny_hf, wedding):
    pts = sweep_pairs(tiny_hf, wedding, 1, ["caa", "pca_diff"], repeats=2)
    n_train = len(wedding.train)
    assert {p.n_pairs for p in pts if p.method == "caa"} == {4, 8, 16, 32, n_train}
    assert {p.method for p in pts} == {"caa", "pca_diff"}


def test_one_subset_per_point_has_an_unknown_spread_except_all_the_pairs(tiny_hf, wedding):
    """One random subset has no spread to read: a 0 drew zero-width bars that claimed exact points.
    All the training pairs are the only subset there is, so their spread is truly 0."""
    n_train = len(wedding.train)
    pts = sweep_pairs(tiny_hf, wedding, 1, ["caa"], repeats=1)
    assert [p.n_pairs for p in pts] == [4, 8, 16, 32, n_train]
    for p in pts:
        if p.n_pairs < n_train:
            assert math.isnan(p.accuracy_sd) and math.isnan(p.gap_sd)
        else:
            assert p.accuracy_sd == 0.0 and p.gap_sd == 0.0
    two = sweep_pairs(tiny_hf, wedding, 1, ["caa"], repeats=2)
    assert all(math.isfinite(p.accuracy_sd) and p.accuracy_sd >= 0 for p in two)


def test_a_dataset_without_heldout_pairs_gets_a_seeded_split(tiny_hf):
    ds = ContrastiveDataset("tiny", [Pair(f"good day {i}", f"bad day {i}") for i in range(8)])
    a = sweep_layers(tiny_hf, ds, [1])
    b = sweep_layers(tiny_hf, ds, [1])
    assert repr(a) == repr(b)  # equal, NaN fields included (2 held-out pairs: d′ has no interval)


def test_best_layer_is_the_highest_accuracy_then_the_largest_gap():
    from steering_core.vectors.evaluation import EvaluationError, LayerScore
    from steering_core.vectors.fitting import best_layer

    scores = [LayerScore(l, "caa", acc, gap, 0.5, 1.0) for l, acc, gap in [(0, 1.0, 0.7), (1, 1.0, 2.0), (2, 0.9, 5.0)]]
    assert best_layer(scores).layer == 1
    with pytest.raises(EvaluationError, match="no layers"):
        best_layer([])


def test_a_diff_vector_fitted_before_the_sink_was_left_out_is_told_to_be_refitted(tiny_hf):
    """The 'diff' pooling fix (position 0 left out) does not repair vectors already saved: those say so."""
    from steering_core.vectors.extraction import POOLING_VERSION
    from steering_core.vectors.fitting import refit_note

    ds = ContrastiveDataset("tiny", [Pair(f"good day {i}", f"bad day {i}") for i in range(8)])
    _, vec = fit_dataset(tiny_hf, FitRequest(ds, layer=1, method="caa", position="diff"))
    assert vec.meta["position"] == "diff" and vec.meta["pooling"] == POOLING_VERSION == 2
    assert refit_note(vec) is None
    old = dataclasses.replace(vec, meta={k: v for k, v in vec.meta.items() if k != "pooling"})
    assert "Fit it again" in refit_note(old)
    last = dataclasses.replace(vec, meta={"position": "last"})
    assert refit_note(last) is None  # only 'diff' pooled position 0 in
    edited = dataclasses.replace(vec, meta={**vec.meta, "pooling": "two"})  # a hand-edited file
    assert "Fit it again" in refit_note(edited)  # not trusted, and no int() error on the page
