"""Prompt-pair metrics ([Purchase 2025] §3.2.2) on a tiny model with a planted SAE: target and
off-target features, their activation under steering, and the generated word at the target slot."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from planted_pairs import (
    ACTIVE,
    BOTH,
    D_SAE,
    HALF,
    LAYER,
    TARGETS,
    final_residuals,
    planted_dataset,
    planted_sae,
)

from steering_core.datasets.generators import from_templates
from steering_core.datasets.pairs import ContrastiveDataset
from steering_core.measure.prompt_pairs import (
    FeatureSelection,
    PromptPairError,
    WordConfig,
    feature_scores,
    feature_texts,
    final_token_features,
    find_target_features,
    generated_word_scores,
    next_words,
    sample_features,
    select_features,
    silent_mask,
    target_mask,
    target_spec,
    template_slots,
    word_similarity,
)
from steering_core.measure.sweep import SweepSpec
from steering_core.measure.template_slots import TemplateSlot, first_word, same_word, template_slot


@pytest.fixture(scope="module")
def planted(tiny_hf):
    ds = planted_dataset()
    return ds, planted_sae(tiny_hf, ds)


def test_target_features_of_a_planted_dataset_are_exactly_the_planted_ones(tiny_hf, planted, one_thread):
    ds, sae = planted
    tf = find_target_features(tiny_hf, sae, ds)
    assert set(tf.target) == set(TARGETS) | {BOTH} and tf.sae_layer == LAYER and tf.n_pairs == len(ds)
    assert tf.positive_share == (1.0,) * len(tf.target)
    rows = {r["feature"]: r for r in tf.rows()}
    assert rows[BOTH]["negative share"] == 1.0 and rows[5]["negative share"] == 0.0
    assert rows[40]["positive mean"] == pytest.approx(2.0, abs=1e-3) and rows[40]["negative mean"] == 0.0
    # a feature the negatives share is dropped on request; a lower consistency share admits HALF
    only = find_target_features(tiny_hf, sae, ds, FeatureSelection(max_negative_share=0.0))
    assert set(only.target) == set(TARGETS)
    assert set(find_target_features(tiny_hf, sae, ds, FeatureSelection(share=0.5)).target) == set(TARGETS) | {BOTH, HALF}
    # the default pairs are the training ones: held-out pairs are not looked at
    marked = ContrastiveDataset("m", [dataclasses.replace(p, split="heldout") if i < 12 else p
                                      for i, p in enumerate(ds.pairs)])
    assert find_target_features(tiny_hf, sae, marked).n_pairs == 12


def test_off_target_features_fire_on_neither_side_and_never_include_a_target(tiny_hf, planted, one_thread):
    ds, sae = planted
    every = find_target_features(tiny_hf, sae, ds, FeatureSelection(off_target=10_000))
    assert set(every.off_target) == set(range(D_SAE)) - ACTIVE and every.n_silent == D_SAE - len(ACTIVE)
    tf = find_target_features(tiny_hf, sae, ds)
    assert len(tf.off_target) == 32 and set(tf.off_target) <= set(every.off_target)
    assert not set(tf.off_target) & set(tf.target)
    assert find_target_features(tiny_hf, sae, ds).off_target == tf.off_target  # seeded
    assert find_target_features(tiny_hf, sae, ds, FeatureSelection(seed=1)).off_target != tf.off_target


def test_selection_as_pure_functions_on_hand_made_activations():
    pos = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert target_mask(pos, neg).tolist() == [True, False, False, False, False]
    assert target_mask(pos, neg, share=0.6).tolist() == [True, False, True, False, False]
    assert target_mask(pos, neg, share=0.6, max_negative_share=0.0).tolist() == [False, False, True, False, False]
    assert silent_mask(pos, neg).tolist() == [False, False, False, True, True]
    assert sample_features(silent_mask(pos, neg), 1, seed=0) in {(3,), (4,)}
    assert sample_features(silent_mask(pos, neg), 5) == (3, 4)
    tf = select_features(pos, neg, FeatureSelection(share=0.6), sae_layer=2)
    assert tf.target == (0, 2) and tf.off_target == (3, 4) and tf.positive_share == pytest.approx((1.0, 2 / 3))
    with pytest.raises(PromptPairError, match="share"):
        select_features(pos, neg, FeatureSelection(share=0.0))


def test_steering_by_the_mean_difference_lands_negatives_on_the_planted_activations(tiny_hf, planted, one_thread):
    ds, sae = planted
    tf = find_target_features(tiny_hf, sae, ds, FeatureSelection(max_negative_share=0.0))
    negs = [p.negative for p in ds.pairs]
    plain = feature_scores(tiny_hf, sae, negs, tf)
    assert plain.target == 0.0 and plain.off_target == 0.0 and plain.n == len(ds)
    pos = final_residuals(tiny_hf, [p.positive for p in ds.pairs])
    neg = final_residuals(tiny_hf, negs)
    caa = (pos - neg).mean(0).float()
    # every planted pre-activation moves by (its positive level + 1): each target lands on its planted level
    steered = feature_scores(tiny_hf, sae, negs, tf, steering=[(LAYER, caa, 1.0)])
    assert steered.target == pytest.approx(np.mean(list(TARGETS.values())), abs=1e-3)
    assert steered.target_se == pytest.approx(0.0, abs=1e-3) and steered.off_target == 0.0
    acts = final_token_features(tiny_hf, sae, negs, steering=[(LAYER, caa, 1.0)])
    assert acts[:, 40] == pytest.approx(torch.full((len(ds),), 2.0), abs=1e-3)


def test_target_spec_makes_the_features_a_sweep_behaviour(tiny_hf, planted, one_thread):
    ds, sae = planted
    tf = find_target_features(tiny_hf, sae, ds)
    spec = SweepSpec(prompts=("hi",), alphas=(1.0,), keywords=("a",))
    s = target_spec(spec, tf)
    assert s.behaviour == "target" and s.target_features == tf.target and s.keywords == ("a",)
    assert target_spec(spec, tf, "off_target").target_features == tf.off_target
    none = dataclasses.replace(tf, target=())
    with pytest.raises(PromptPairError, match="no target features"):
        target_spec(spec, none)


def test_template_slot_is_where_the_pair_starts_to_differ():
    start = "Everyone thought the dancer would lose. In the end they"
    assert template_slot(start + " won. Nobody cheered.", start + " lost. Nobody cheered.") == TemplateSlot(
        start, "won", "lost", start + " won", start + " lost")
    # words that share their first letters: the slot still starts at the word
    assert template_slot("We will wonder", "We will wander") == TemplateSlot(
        "We will", "wonder", "wander", "We will wonder", "We will wander")
    assert template_slot("Cats sleep", "Dogs sleep") is None  # differs at the first word: no prefix
    assert [s.positive for s in template_slots(planted_dataset())[:2]] == ["won", "triumphed"]


def test_features_are_read_at_the_target_word_unless_told_to_read_the_final_token():
    ds = ContrastiveDataset("d", from_templates(["At the party we talked about the <target>."], ["x"],
                                                ["wedding", "bride"], ["weather", "traffic"]))
    assert feature_texts(ds) == (["At the party we talked about the wedding", "At the party we talked about the bride"],
                                 ["At the party we talked about the weather", "At the party we talked about the traffic"])
    assert feature_texts(ds, [1], at="final") == (["At the party we talked about the bride."],
                                                  ["At the party we talked about the traffic."])
    story = ContrastiveDataset("s", from_templates(["<target> slept."], ["x"], ["Cats"], ["Dogs"]))
    assert feature_texts(story) == (["Cats slept."], ["Dogs slept."])  # no slot: whole texts
    planted = planted_dataset()  # ends at its target words: both readings agree
    assert feature_texts(planted) == feature_texts(planted, at="final") == (planted.positives, planted.negatives)
    with pytest.raises(PromptPairError, match="slot"):
        FeatureSelection(at="middle").checked()


def test_first_word_and_exact_match():
    assert first_word("  won. And then") == "won" and first_word("\n\n(Wedding)!") == "Wedding"
    assert first_word("   ") == "" and first_word("...") == ""
    assert same_word("Won!", "won") and not same_word("won", "wont") and not same_word("", "")


def test_similarity_of_a_word_with_itself_is_one_and_it_is_an_exact_match():
    sim, exact = word_similarity(["wedding", "Won.", "banana", ""], ["wedding", "won", "wedding", "wedding"])
    assert sim[0] == pytest.approx(1.0, abs=1e-5) and sim[1] == pytest.approx(1.0, abs=1e-5)
    assert exact.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert sim[2] < 0.9 and sim[3] == 0.0  # another word is less similar; writing no word scores 0


def test_generated_word_scores_compare_the_models_own_word(tiny_hf, one_thread):
    prefixes = ["In the end they", "After the match the team had", "She looked up and"]
    words = next_words(tiny_hf, prefixes)
    assert words == next_words(tiny_hf, prefixes)  # greedy: the same words again
    assert len(words) == 3 and all(w == first_word(w) for w in words) and any(words)
    # slots whose positive target is the word the model writes: similarity 1, exact match every time
    slots = [TemplateSlot(p, w, "x", p + " " + w, p + " x") for p, w in zip(prefixes, words) if w] + [None]
    got = generated_word_scores(tiny_hf, slots)
    assert got.exact == 1.0 and got.similarity == pytest.approx(1.0, abs=1e-5) and None not in got.words
    with pytest.raises(PromptPairError, match="template"):
        generated_word_scores(tiny_hf, [None])


def test_sampled_words_use_a_distinct_seed_per_pair_and_sample(tiny_hf, monkeypatch, one_thread):
    import steering_core.model.generation as gen

    seen = []
    real = gen.generate

    def spy(*a, **k):
        seen.extend(k["row_seeds"])
        return real(*a, **k)

    monkeypatch.setattr(gen, "generate", spy)
    words = next_words(tiny_hf, ["In the end they", "In the end they"], config=WordConfig(temperature=1.0, samples=3))
    assert len(words) == 6 and len(seen) == 6 and len(set(seen)) == 6
