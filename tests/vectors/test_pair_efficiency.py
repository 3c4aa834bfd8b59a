"""Data efficiency on the prompt-pair metrics (steering_core.vectors.pair_efficiency) on a tiny model
with a planted SAE (tests/planted_pairs.py): the planted answer comes out, held-out pairs are never
trained on, and a batch of resampled fits scores like each fit steered alone."""

from __future__ import annotations

import math

import pytest


def test_prompt_pair_efficiency_shape_planted_answer_and_heldout_pairs_never_trained_on(tiny_hf, monkeypatch,
                                                                                       one_thread):
    import numpy as np
    from planted_pairs import LAYER, TARGETS, planted_dataset, planted_sae

    import steering_core.vectors.pair_efficiency as ev
    from steering_core.measure.prompt_pairs import FeatureSelection, WordConfig
    from steering_core.vectors.extraction import pair_activations
    from steering_core.vectors.pair_efficiency import PAIR_METRICS, PromptPairSetup, prompt_pair_efficiency

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
    from steering_core.vectors.extraction import pair_activations
    from steering_core.vectors.methods import fit
    from steering_core.vectors.pair_efficiency import PromptPairSetup, prompt_pair_efficiency

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

    from planted_pairs import LAYER, planted_dataset, planted_sae

    from steering_core.measure.prompt_pairs import WordConfig
    from steering_core.vectors.pair_efficiency import PromptPairSetup, pair_methods, prompt_pair_efficiency

    assert {"loreft", "lorest"} <= set(pair_methods())
    ds = planted_dataset()
    sae = planted_sae(tiny_hf, ds)
    res = prompt_pair_efficiency(tiny_hf, sae, ds, PromptPairSetup(layer=LAYER, methods=("lorest", "loreft"),
                                                                   repeats=1, counts=(8,),
                                                                   words=WordConfig(new_tokens=2)))
    for method in ("lorest", "loreft"):
        (p,) = res.curve("target", method)
        assert p.n_pairs == 8 and math.isfinite(p.mean)


def test_target_features_the_negatives_share_are_flagged_not_plotted_as_if_they_measured_steering():
    """Audit: on formal_vs_casual the defaults (any share of negatives) found 2 target features
    that fire on the final '.', unsteered 51.7 above the positives' 49.0; the figure drew curves
    between the two lines as if they could move from one to the other, without a word."""
    from steering_core.vectors.pair_efficiency import PromptPairEfficiency, PromptPairSetup

    def result(base, goal):
        return PromptPairEfficiency([], {"target": base}, {"target": goal}, None, [], [], {}, PromptPairSetup(1), 0.0)

    words = result(51.7, 49.0).warnings()
    assert len(words) == 1 and "(51.7) as on the positives (49)" in words[0] and "Largest share of negatives" in words[0]
    assert result(0.2, 3.0).warnings() == []  # the planted case: they separate
    assert result(float("nan"), 3.0).warnings() == []
