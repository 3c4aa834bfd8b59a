"""Orthogonal decomposition and projection cap: each equals its formula on random activations and
through the model (the hook's output is the formula applied to the recorded residual)."""

from __future__ import annotations

import pytest
import torch

from steering_core import SteeringError, random_unit_vector, record_residuals, steering
from steering_core.model.operators import (
    CapTerm,
    OrthogonalTerm,
    cap_component,
    get_operator,
    operator_term,
    set_component,
)
from steering_core.vectors import (
    SteeringVector,
    VectorError,
    combine,
    export_gguf,
    from_safetensors_bytes,
    to_safetensors_bytes,
)

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: extra threads only spin on a busy CPU


def _loop_orthogonal(h: torch.Tensor, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """a − (a·v̂)v̂ + α·v, one activation at a time (the reference computation)."""
    v_hat = v / v.norm()
    out = h.clone()
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            a = h[i, j]
            out[i, j] = a - (a @ v_hat) * v_hat + alpha * v
    return out


def _loop_cap(h: torch.Tensor, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """a − max(a·v̂ − α|v|, 0)·v̂, one activation at a time."""
    v_hat = v / v.norm()
    out = h.clone()
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            a = h[i, j]
            out[i, j] = a - max(float(a @ v_hat) - alpha * float(v.norm()), 0.0) * v_hat
    return out


def _random(seed=0, batch=3, pos=5, d=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, pos, d, generator=g) * 3, torch.randn(d, generator=g) * 2


@pytest.mark.parametrize("alpha", [0.0, 0.7, -1.3])
def test_orthogonal_decomposition_equals_its_formula_on_random_activations(alpha):
    h, v = _random()
    got = set_component(h, v, alpha)
    assert torch.allclose(got, _loop_orthogonal(h, v, alpha), atol=1e-5)
    v_hat = v / v.norm()
    # every activation ends at α|v| along v, and the orthogonal part is untouched
    assert torch.allclose(got @ v_hat, torch.full(h.shape[:2], alpha * float(v.norm())), atol=1e-5)
    assert torch.allclose(got - (got @ v_hat).unsqueeze(-1) * v_hat, h - (h @ v_hat).unsqueeze(-1) * v_hat, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.4, -0.5])
def test_projection_cap_equals_its_formula_on_random_activations(alpha):
    h, v = _random(seed=1)
    got = cap_component(h, v, alpha)
    assert torch.allclose(got, _loop_cap(h, v, alpha), atol=1e-5)
    v_hat = v / v.norm()
    level = alpha * float(v.norm())
    below = (h @ v_hat) <= level
    assert below.any() and (~below).any()  # both cases are exercised
    assert torch.equal(got[below], h[below])  # at or under the cap: bit for bit untouched
    assert torch.allclose((got @ v_hat)[~below], torch.full((int((~below).sum()),), level), atol=1e-5)


def test_per_row_vectors_and_alphas_are_applied_row_by_row():
    h, _ = _random(seed=2)
    g = torch.Generator().manual_seed(7)
    vs = torch.randn(3, 16, generator=g)
    alphas = torch.tensor([0.5, -1.0, 2.0])
    for fn, loop in ((set_component, _loop_orthogonal), (cap_component, _loop_cap)):
        got = fn(h, vs, alphas)
        for i in range(3):
            assert torch.allclose(got[i:i + 1], loop(h[i:i + 1], vs[i], float(alphas[i])), atol=1e-5)


@pytest.mark.parametrize("name,formula,cls", [("orthogonal", _loop_orthogonal, OrthogonalTerm),
                                              ("projection_cap", _loop_cap, CapTerm)])
def test_through_the_model_the_hook_output_is_the_formula_of_the_recorded_residual(tiny, name, formula, cls):
    layer, alpha = 1, 0.3
    v = 2.0 * random_unit_vector(tiny.d_model, seed=4)
    term = SteeringVector("v", layer, v, operator=name).term(tiny, alpha)
    assert isinstance(term, cls)
    ids, mask = tiny.tokenize(PROMPTS)
    base = record_residuals(tiny, ids, mask, [layer])[layer]
    steered = record_residuals(tiny, ids, mask, [layer], steering=steering(tiny, term))[layer]
    assert torch.allclose(steered, formula(base, v, alpha), atol=1e-4)
    assert not torch.allclose(steered, base, atol=1e-3)
    # the edit reaches later blocks: the next layer's residual moves too
    after = record_residuals(tiny, ids, mask, [layer + 1], steering=steering(tiny, term))[layer + 1]
    assert not torch.allclose(after, record_residuals(tiny, ids, mask, [layer + 1])[layer + 1], atol=1e-3)


def test_a_row_mask_leaves_the_unsteered_half_exactly_alone(tiny_hf):
    layer = 1
    v = random_unit_vector(tiny_hf.d_model, seed=5)
    ids, mask = tiny_hf.tokenize(PROMPTS[:2] * 2)
    active = torch.tensor([False, False, True, True])
    for name in ("orthogonal", "projection_cap"):
        term = operator_term(tiny_hf, name, layer, v, torch.tensor([0.0, 0.0, -0.2, -0.2]), active=active)
        base = record_residuals(tiny_hf, ids, mask, [layer])[layer]
        out = record_residuals(tiny_hf, ids, mask, [layer], steering=steering(tiny_hf, term))[layer]
        assert torch.equal(out[:2], base[:2])
        assert not torch.allclose(out[2:], base[2:], atol=1e-4)


def test_the_registry_describes_them_and_they_behave_as_non_additive_vectors(tmp_path):
    for name, label in (("orthogonal", "orthogonal decomposition"), ("projection_cap", "projection cap")):
        op = get_operator(name)
        assert op.label == label and not op.additive and not op.needs_reference and "instead of adding" in op.about
        vec = SteeringVector("v", 2, torch.arange(1.0, 9.0), operator=name)
        back = from_safetensors_bytes(to_safetensors_bytes(vec))
        assert back.operator == name and torch.equal(back.direction, vec.direction)
        with pytest.raises(VectorError, match=label):
            combine([(vec, 1.0)])
        with pytest.raises(VectorError, match=f"{label} vector; GGUF control vectors can only be added"):
            export_gguf(vec, tmp_path / "v.gguf", "llama")


def test_bad_input_is_refused_with_a_sentence(tiny_hf):
    d = tiny_hf.d_model
    with pytest.raises(VectorError, match="Orthogonal decomposition needs a non-zero direction"):
        SteeringVector("z", 1, torch.zeros(d), operator="orthogonal")
    with pytest.raises(VectorError, match="A projection cap needs a non-zero direction"):
        SteeringVector("z", 1, torch.zeros(d), operator="projection_cap")
    with pytest.raises(SteeringError, match="non-zero direction"):
        operator_term(tiny_hf, "projection_cap", 1, torch.zeros(d), 1.0)
    rows = torch.stack([random_unit_vector(d, 1), torch.zeros(d)])
    with pytest.raises(SteeringError, match="in every row"):
        operator_term(tiny_hf, "orthogonal", 1, rows, 1.0)
    with pytest.raises(SteeringError, match="alpha must be a finite number"):
        operator_term(tiny_hf, "orthogonal", 1, random_unit_vector(d, 1), float("nan"))
    with pytest.raises(SteeringError, match="needs length d_model"):
        operator_term(tiny_hf, "projection_cap", 1, torch.ones(d + 1), 1.0)
    with pytest.raises(SteeringError, match="out of range"):
        operator_term(tiny_hf, "orthogonal", 99, random_unit_vector(d, 1), 1.0)
    with pytest.raises(SteeringError, match="takes no reference"):
        operator_term(tiny_hf, "orthogonal", 1, random_unit_vector(d, 1), 1.0, reference=torch.ones(d))
