"""Pair activations: pooled exactly as documented, batch-invariant, cached by (model, texts, layer, position)."""

from __future__ import annotations

import pytest
import torch

from steering_core.model.recording import record_residuals
from steering_core.vectors.extraction import (
    ActivationCache,
    ExtractionError,
    diff_starts,
    extract,
    pair_activations,
)

TEXTS = ["the cat sat on the mat", "a dog", "wedding bells rang all day long in the town", "x y"]


def _solo(model, text, layer):
    ids, mask = model.tokenize([text])
    return record_residuals(model, ids, mask, [layer])[layer][0].float()  # [pos, d], no padding


def test_last_and_mean_match_unbatched_reference(tiny_hf):
    got_last = extract(tiny_hf, TEXTS, [1, 2], "last", batch_size=3)
    got_mean = extract(tiny_hf, TEXTS, [2], "mean", batch_size=3)
    for i, t in enumerate(TEXTS):
        assert torch.allclose(got_last[1][i], _solo(tiny_hf, t, 1)[-1], atol=1e-4)
        assert torch.allclose(got_last[2][i], _solo(tiny_hf, t, 2)[-1], atol=1e-4)
        solo = _solo(tiny_hf, t, 2)
        ref = solo[1:].mean(0) if solo.shape[0] > 1 else solo.mean(0)  # position 0 (the sink) left out
        assert torch.allclose(got_mean[2][i], ref, atol=1e-4)


def test_batch_size_does_not_change_results(tiny_hf):
    a = extract(tiny_hf, TEXTS, [2], "mean", batch_size=1)[2]
    b = extract(tiny_hf, TEXTS, [2], "mean", batch_size=16)[2]
    assert torch.allclose(a, b, atol=1e-4)


def test_diff_position_averages_only_after_the_shared_prefix(tiny_hf):
    pos = ["once upon a time the knight won the war"]
    neg = ["once upon a time the knight lost the war"]
    sp, sn = diff_starts(tiny_hf, pos, neg)
    ids_p = tiny_hf.tokenize(pos)[0][0].tolist()
    ids_n = tiny_hf.tokenize(neg)[0][0].tolist()
    common = next(i for i, (x, y) in enumerate(zip(ids_p, ids_n)) if x != y)
    assert sp == [common] and sn == [common] and common > 0
    pa = pair_activations(tiny_hf, pos, neg, [2], "diff", cache=None)[2]
    assert torch.allclose(pa.pos[0], _solo(tiny_hf, pos[0], 2)[common:].mean(0), atol=1e-4)
    assert torch.allclose(pa.neg[0], _solo(tiny_hf, neg[0], 2)[common:].mean(0), atol=1e-4)


def test_diff_leaves_out_position_0_when_a_pair_differs_from_its_first_token(tiny_hf):
    """Audit: formal_vs_casual ("Could you kindly…" / "Can you…") differs from its first token, so
    'diff' averaged in the attention sink and the embedded model's CAA vector had norm 960 at a
    block whose residuals have norm ≈ 176. Position 0 is left out, as 'mean' already did."""
    pos, neg = ["alpha beta gamma delta"], ["omega beta gamma delta"]
    sp, sn = diff_starts(tiny_hf, pos, neg)
    assert sp == [0] and sn == [0]  # they differ at the first token
    pa = pair_activations(tiny_hf, pos, neg, [2], "diff", cache=None)[2]
    assert torch.allclose(pa.pos[0], _solo(tiny_hf, pos[0], 2)[1:].mean(0), atol=1e-4)
    assert torch.allclose(pa.neg[0], _solo(tiny_hf, neg[0], 2)[1:].mean(0), atol=1e-4)
    one = pair_activations(tiny_hf, ["a"], ["b"], [2], "diff", cache=None)[2]  # one token: nothing else to use
    assert torch.allclose(one.pos[0], _solo(tiny_hf, "a", 2)[0], atol=1e-4)


def test_a_pooling_change_is_a_new_cache_key():
    """Activations pooled the old way stay on disk across versions; the key names the pooling, so
    they are recomputed, not fitted on."""
    from steering_core.vectors import extraction

    key = ActivationCache.key("m", ["p"], ["n"], 2, "diff")
    old = extraction.POOLING_VERSION
    try:
        extraction.POOLING_VERSION = old - 1
        assert ActivationCache.key("m", ["p"], ["n"], 2, "diff") != key
    finally:
        extraction.POOLING_VERSION = old


def test_cache_hits_and_disk_round_trip(tiny_hf, tmp_path):
    cache = ActivationCache(tmp_path)
    a = pair_activations(tiny_hf, TEXTS[:2], TEXTS[2:], [1, 2], "last", cache=cache)
    assert cache.misses == 2 and cache.hits == 0
    b = pair_activations(tiny_hf, TEXTS[:2], TEXTS[2:], [1, 2], "last", cache=cache)
    assert cache.hits == 2 and torch.equal(a[1].pos, b[1].pos)
    # a fresh cache on the same folder reads the files back
    fresh = ActivationCache(tmp_path)
    c = pair_activations(tiny_hf, TEXTS[:2], TEXTS[2:], [2], "last", cache=fresh)
    assert fresh.hits == 1 and torch.equal(c[2].neg, a[2].neg)
    # another position is another entry
    pair_activations(tiny_hf, TEXTS[:2], TEXTS[2:], [2], "mean", cache=fresh)
    assert fresh.misses == 1


def test_damaged_cache_file_is_recomputed_not_trusted(tiny_hf, tmp_path):
    cache = ActivationCache(tmp_path)
    ref = pair_activations(tiny_hf, TEXTS[:2], TEXTS[2:], [1], "last", cache=cache)[1]
    for f in tmp_path.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    again = pair_activations(tiny_hf, TEXTS[:2], TEXTS[2:], [1], "last", cache=ActivationCache(tmp_path))[1]
    assert torch.allclose(again.pos, ref.pos)


def test_bad_input_messages(tiny_hf):
    with pytest.raises(ExtractionError, match="position"):
        extract(tiny_hf, TEXTS, [1], "middle")
    with pytest.raises(ExtractionError, match="does not exist"):
        extract(tiny_hf, TEXTS, [99], "last")
    with pytest.raises(ExtractionError, match="pairs must match"):
        pair_activations(tiny_hf, ["a", "b"], ["c"], [1])
    with pytest.raises(ExtractionError, match="no pairs"):
        pair_activations(tiny_hf, [], [], [1])
    with pytest.raises(ExtractionError, match="same tokens"):
        pair_activations(tiny_hf, ["same text"], ["same text"], [1], "diff", cache=None)
