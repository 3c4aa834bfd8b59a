"""The Steer page's library call: one batch, same seeds, only the vector differs."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from steering_core import GenerationConfig, SteeringError, VectorFileError, generate, random_unit_vector
from steering_core.measure.live import SideBySide, random_direction, sae_direction, side_by_side, uploaded_direction
from steering_core.model.saes import tiny_sae


def _last(model, **kw):
    req = SideBySide(**{"prompt": "hello", "layer": 1, "vector": random_unit_vector(model.d_model, 3),
                        "alpha": 6.0, "n_samples": 2,
                        "config": GenerationConfig(max_new_tokens=10, temperature=1.0, seed=5), **kw})
    updates = list(side_by_side(model, req))
    assert updates[-1].done and all(not u.done for u in updates[:-1])
    return updates[-1]


def test_unsteered_column_equals_plain_generation_and_steered_differs(tiny_hf):
    last = _last(tiny_hf)
    prompt = tiny_hf.format_prompt("hello")
    plain = generate(tiny_hf, [prompt] * 2, GenerationConfig(max_new_tokens=10, temperature=1.0, seed=5))
    assert last.unsteered == plain.texts  # same per-sample seeds (row_seed(5, j)), α = 0 rows
    assert last.steered != last.unsteered


def test_ace_vector_edits_only_the_steered_column(tiny_hf):
    ref = 3 * random_unit_vector(tiny_hf.d_model, 9)
    last = _last(tiny_hf, reference=ref, alpha=0.0)
    prompt = tiny_hf.format_prompt("hello")
    plain = generate(tiny_hf, [prompt] * 2, GenerationConfig(max_new_tokens=10, temperature=1.0, seed=5))
    assert last.unsteered == plain.texts  # the mask keeps ACE off the unsteered rows
    assert last.steered != last.unsteered  # ACE at α = 0 still moves activations to a₀'s level


def test_alpha_zero_gives_identical_columns(tiny_hf):
    last = _last(tiny_hf, alpha=0.0)
    assert last.steered == last.unsteered


def test_too_many_samples_are_clamped_and_said(tiny_hf):
    last = _last(tiny_hf, n_samples=40, config=GenerationConfig(max_new_tokens=2, seed=0))
    assert len(last.steered) == 16 and any("clamped" in n for n in last.notes)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "abc"])
def test_bad_alpha_is_refused_before_generating(tiny_hf, alpha):
    with pytest.raises(SteeringError, match="alpha"):
        _last(tiny_hf, alpha=alpha)


def test_sae_direction_needs_an_sae_and_a_valid_id(tiny_hf):
    with pytest.raises(SteeringError, match="No SAE"):
        sae_direction(tiny_hf, None, 3)
    sae = tiny_sae(tiny_hf, layer=1, d_sae=32)
    r = sae_direction(tiny_hf, sae, "7")
    assert r.suggested_layer == 1
    assert torch.allclose(r.vector, sae.W_dec[7] / sae.W_dec[7].norm())
    assert random_direction(tiny_hf, 4).vector.norm().item() == pytest.approx(1.0)


def test_uploaded_direction_normalises_and_refuses_bad_files(tiny_hf, tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.full(tiny_hf.d_model, 2.0, dtype=np.float32))
    r = uploaded_direction(tiny_hf, buf.getvalue(), "v.npy")
    assert r.original_norm == pytest.approx(2.0 * tiny_hf.d_model ** 0.5)
    assert r.vector.norm().item() == pytest.approx(1.0)
    raw = uploaded_direction(tiny_hf, buf.getvalue(), "v.npy", normalize=False)
    assert torch.equal(raw.vector, torch.full((tiny_hf.d_model,), 2.0))
    zero = io.BytesIO()
    np.save(zero, np.zeros(tiny_hf.d_model, dtype=np.float32))
    with pytest.raises(SteeringError, match="zero vector"):
        uploaded_direction(tiny_hf, zero.getvalue(), "z.npy")
    with pytest.raises(VectorFileError):
        uploaded_direction(tiny_hf, pickle.dumps({"v": [1.0] * tiny_hf.d_model}), "v.npy")
    stack = io.BytesIO()
    np.save(stack, np.ones((3, tiny_hf.d_model), dtype=np.float32))
    with pytest.raises(SteeringError, match="3 vectors"):
        uploaded_direction(tiny_hf, stack.getvalue(), "s.npy")


def test_an_uploaded_vector_near_float32s_limit_is_normalised_or_refused_never_zeroed(tiny_hf):
    """Audit: values of 1e38 overflowed the float32 norm to inf, so 'normalised' gave a silent zero
    vector, and unnormalised steering would have filled the residual with infinities."""
    big = io.BytesIO()
    np.save(big, np.full(tiny_hf.d_model, 1e38, dtype=np.float32))
    r = uploaded_direction(tiny_hf, big.getvalue(), "big.npy")
    assert torch.allclose(r.vector, torch.full((tiny_hf.d_model,), tiny_hf.d_model ** -0.5))
    assert r.original_norm == pytest.approx(1e38 * tiny_hf.d_model ** 0.5, rel=1e-6)
    with pytest.raises(SteeringError, match="beyond what 32-bit arithmetic holds.*Normalise to unit norm"):
        uploaded_direction(tiny_hf, big.getvalue(), "big.npy", normalize=False)
    zero = io.BytesIO()
    np.save(zero, np.zeros(tiny_hf.d_model, dtype=np.float32))
    with pytest.raises(SteeringError, match="zero vector"):  # unnormalised too: nothing to steer along
        uploaded_direction(tiny_hf, zero.getvalue(), "z.npy", normalize=False)


def test_extra_vectors_steer_the_steered_column_together(tiny_hf):
    from steering_core.measure.live import ExtraVector
    from steering_core.model.steering import make_term, steering

    v1, v2 = random_unit_vector(tiny_hf.d_model, 3), random_unit_vector(tiny_hf.d_model, 8)
    last = _last(tiny_hf, extra=(ExtraVector(2, v2, 4.0),))
    prompt = tiny_hf.format_prompt("hello")
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=5)
    both = generate(tiny_hf, [prompt] * 2, cfg,
                    steering=steering(tiny_hf, make_term(tiny_hf, 1, v1, 6.0), make_term(tiny_hf, 2, v2, 4.0)))
    assert last.steered == both.texts
    assert last.unsteered == generate(tiny_hf, [prompt] * 2, cfg).texts


def test_multi_turn_columns_keep_their_own_histories(tiny_hf):
    hu, hs = (("hi", "plain reply"),), (("hi", "steered reply"),)
    last = _last(tiny_hf, prompt="and then?", history_unsteered=hu, history_steered=hs)
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=5)
    conv = tiny_hf.format_conversation([*hu, ("and then?", None)])
    assert "plain reply" in conv and "and then?" in conv
    assert last.unsteered == generate(tiny_hf, [conv] * 2, cfg).texts
    with pytest.raises(SteeringError, match="Type a message"):
        _last(tiny_hf, prompt="  ", history_unsteered=hu, history_steered=hs)


# -- live α: only the steered column is regenerated --------------------------------------------------


def test_live_alpha_regenerates_only_the_steered_column_and_equals_a_joint_run(tiny_hf):
    """With the unsteered column from cache, generating only the steered rows (same row seeds) gives
    exactly the steered column of a joint run, for additive and ACE vectors and extra vectors."""
    from steering_core.measure.live import ExtraVector, unsteered_key

    base = dict(prompt="hello", layer=1, vector=random_unit_vector(tiny_hf.d_model, 3), n_samples=3,
                config=GenerationConfig(max_new_tokens=10, temperature=1.0, seed=5))
    first = list(side_by_side(tiny_hf, SideBySide(alpha=2.0, **base)))[-1]
    for kw in ({"alpha": 9.0}, {"alpha": 0.0, "reference": 3 * random_unit_vector(tiny_hf.d_model, 9)},
               {"alpha": 5.0, "extra": (ExtraVector(0, random_unit_vector(tiny_hf.d_model, 4), 7.0),)}):
        req = SideBySide(**base, **kw)
        assert unsteered_key(req) == unsteered_key(SideBySide(alpha=2.0, **base))  # α and vectors do not matter
        joint = list(side_by_side(tiny_hf, req))[-1]
        live = list(side_by_side(tiny_hf, req, unsteered=first.unsteered))
        assert live[-1].done and live[-1].unsteered == joint.unsteered == first.unsteered
        assert live[-1].steered == joint.steered
    assert unsteered_key(SideBySide(alpha=2.0, **{**base, "config": GenerationConfig(seed=6)})) != unsteered_key(
        SideBySide(alpha=2.0, **base))
    with pytest.raises(SteeringError, match="cached unsteered column has 2"):
        list(side_by_side(tiny_hf, SideBySide(alpha=1.0, **base), unsteered=["a", "b"]))


def test_operator_choices_follow_what_the_vector_carries():
    import torch

    from steering_core.measure.live import ResolvedVector, operator_choices, with_operator
    from steering_core.model.steering import SteeringError

    plain = ResolvedVector(torch.ones(4) / 2, "v", 1.0)
    assert operator_choices(plain) == ["add", "orthogonal", "projection_cap"]
    ace = ResolvedVector(torch.ones(4) / 2, "w", 1.0, reference=torch.zeros(4), operator="ace")
    assert "ace" in operator_choices(ace)
    capped = with_operator(plain, "projection_cap")
    assert capped.operator == "projection_cap" and capped.description == "v, projection cap"
    assert with_operator(plain, "add") is plain
    with pytest.raises(SteeringError, match="cannot be applied with 'ace'"):
        with_operator(plain, "ace")
