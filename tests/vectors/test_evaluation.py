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


def test_prompt_pair_efficiency_shape_planted_answer_and_heldout_pairs_never_trained_on(tiny_hf, monkeypatch,
                                                                                       one_thread):
    import numpy as np
    from planted_pairs import LAYER, TARGETS, planted_dataset, planted_sae

    import steering_core.vectors.evaluation as ev
    from steering_core.measure.prompt_pairs import FeatureSelection, WordConfig
    from steering_core.vectors.evaluation import PAIR_METRICS, PromptPairSetup, prompt_pair_efficiency
    from steering_core.vectors.extraction import pair_activations

    ds = planted_dataset()
    sae = planted_sae(tiny_hf, ds)
    fitted = []
    real_fit = ev.fit

    def spy(name, pos, neg, ctx=None):
        fitted.append((name, pos.clone()))
        return real_fit(name, pos, neg, ctx)

    monkeypatch.setattr(ev, "fit", spy)
    methods = ("caa", "pca_diff", "probe", "ace")
    setup = PromptPairSetup(layer=LAYER, methods=methods, repeats=2, counts=(2, 4, 18),
                            selection=FeatureSelection(max_negative_share=0.0), words=WordConfig(new_tokens=3))
    res = prompt_pair_efficiency(tiny_hf, sae, ds, setup)
    assert len(res.heldout) == 6 and sorted(res.train + res.heldout) == list(range(24))
    assert set(res.features.target) == set(TARGETS)
    # one point per (method, n_pairs, metric); the probe needs 4 pairs; the full set is one resample
    keys = {(p.method, p.n_pairs, p.metric) for p in res.points}
    want = {(m, n, k) for m in methods for n in (2, 4, 18) for k in PAIR_METRICS if not (m == "probe" and n == 2)}
    assert keys == want and len(res.points) == len(want)
    assert all(p.repeats == (1 if p.n_pairs == 18 else 2) and p.sd >= 0 for p in res.points)
    assert set(res.baseline) == set(PAIR_METRICS) and [len(s) for s in res.subsets.values()] == [2, 2, 1]
    assert [p.n_pairs for p in res.curve("target", "probe")] == [4, 18]
    # held-out pairs are in no resample, and no fit ever saw a held-out activation
    assert all(len(s) == n and not set(s) & set(res.heldout) for n, subs in res.subsets.items() for s in subs)
    pa = pair_activations(tiny_hf, ds.positives, ds.negatives, [LAYER])[LAYER]
    held_rows = pa.pos[res.heldout]
    assert len(fitted) == sum(len(s) for n, s in res.subsets.items() for m in methods if not (m == "probe" and n == 2))
    for _name, pos in fitted:
        assert not (pos[:, None, :] == held_rows[None]).all(-1).any()
    # the planted answer: the mean difference moves every planted pre-activation from −1 to its level
    caa = res.curve("target", "caa")
    assert [p.mean for p in caa] == pytest.approx([np.mean(list(TARGETS.values()))] * 3, abs=1e-3)
    assert res.baseline["target"] == 0.0 and res.positives["target"] == pytest.approx(1.5, abs=1e-3)
    assert all(p.mean == 0.0 for p in res.points if p.metric == "off_target")  # they never fire
    assert all(0.0 <= p.mean <= 1.0 for p in res.points if p.metric == "word_exact")


def test_batched_resamples_score_like_each_fit_steered_alone(tiny_hf, one_thread):
    from planted_pairs import LAYER, planted_dataset, planted_sae

    from steering_core.measure.prompt_pairs import (
        WordConfig,
        feature_scores,
        find_target_features,
        generated_word_scores,
        template_slots,
    )
    from steering_core.model.operators import operator_term
    from steering_core.vectors.evaluation import PromptPairSetup, prompt_pair_efficiency
    from steering_core.vectors.extraction import pair_activations
    from steering_core.vectors.methods import fit

    ds = planted_dataset()
    sae = planted_sae(tiny_hf, ds)
    words = WordConfig(new_tokens=3)
    res = prompt_pair_efficiency(tiny_hf, sae, ds, PromptPairSetup(layer=LAYER, methods=("caa", "ace"), alpha=2.0,
                                                                   repeats=3, counts=(4, 18), words=words))
    pa = pair_activations(tiny_hf, ds.positives, ds.negatives, [LAYER])[LAYER].subset(res.train)
    tf = find_target_features(tiny_hf, sae, ds, pairs=res.train)
    assert tf == res.features
    held_neg = [ds.pairs[i].negative for i in res.heldout]
    for method in ("caa", "ace"):
        f = fit(method, pa.pos, pa.neg)  # the full training set: the one resample at n = 18
        term = operator_term(tiny_hf, f.operator, LAYER, f.direction, 2.0, reference=f.reference)
        alone = feature_scores(tiny_hf, sae, held_neg, tf, steering=[term])
        w = generated_word_scores(tiny_hf, template_slots(ds, res.heldout), steering=[term], config=words)
        got = {m: res.curve(m, method)[-1] for m in ("target", "off_target", "word_similarity", "word_exact")}
        assert all(p.n_pairs == 18 and p.repeats == 1 for p in got.values())
        assert got["target"].mean == pytest.approx(alone.target, abs=1e-4)
        assert got["off_target"].mean == alone.off_target
        assert got["word_similarity"].mean == pytest.approx(w.similarity, abs=1e-5)
        assert got["word_exact"].mean == w.exact


def test_prompt_pair_efficiency_takes_the_trained_adaptors_too(tiny_hf, one_thread):
    """LoReFT and LoReST fit from pairs like CAA, so their curves belong in the same figures; their
    adaptors steer the held-out rows through their own operators."""
    import math

    from planted_pairs import LAYER, planted_dataset, planted_sae

    from steering_core.measure.prompt_pairs import WordConfig
    from steering_core.vectors.evaluation import PromptPairSetup, pair_methods, prompt_pair_efficiency

    assert {"loreft", "lorest"} <= set(pair_methods())
    ds = planted_dataset()
    sae = planted_sae(tiny_hf, ds)
    res = prompt_pair_efficiency(tiny_hf, sae, ds, PromptPairSetup(layer=LAYER, methods=("lorest", "loreft"),
                                                                   repeats=1, counts=(8,),
                                                                   words=WordConfig(new_tokens=2)))
    for method in ("lorest", "loreft"):
        (p,) = res.curve("target", method)
        assert p.n_pairs == 8 and math.isfinite(p.mean)
