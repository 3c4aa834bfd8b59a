"""The operator registry: a new operator is one registration, and SteeringVector.term() applies it exactly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from steering_core import (
    GenerationConfig,
    SteeringCoreError,
    SteeringError,
    generate,
    random_unit_vector,
    record_residuals,
    steering,
)
from steering_core.measure.live import SideBySide, side_by_side
from steering_core.model.operators import (
    AceTerm,
    get_operator,
    operator_names,
    operator_term,
    register_operator,
    unregister_operator,
)
from steering_core.model.steering import SteeringTerm, make_term
from steering_core.vectors import (
    SteeringVector,
    VectorError,
    combine,
    export_gguf,
    from_safetensors_bytes,
    to_safetensors_bytes,
)

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]
TOY = "scale_along"


@dataclass(frozen=True)
class ScaleAlongTerm(SteeringTerm):
    """The toy operator: h ← h + α·(h·r̂)·r̂, i.e. the component along r̂ is scaled by 1 + α."""

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        r_hat = self.vector / self.vector.norm()
        a = self.alpha.view(-1, 1, 1) if isinstance(self.alpha, torch.Tensor) else float(self.alpha)  # α per row
        return hidden + a * (hidden @ r_hat).unsqueeze(-1) * r_hat


@pytest.fixture
def scale_along():
    """The toy operator, registered in this one place and gone again after the test."""

    @register_operator(TOY, label="scale-along", about="scales the component along its direction instead of adding")
    def build(model, layer, direction, alpha=1.0, *, active=None):
        return make_term(model, layer, direction, alpha, term_cls=ScaleAlongTerm, active=active)

    yield TOY
    unregister_operator(TOY)


def test_a_registered_operator_steers_exactly_through_vector_term(tiny, scale_along):
    layer, alpha = 1, 0.5
    r = 2.0 * random_unit_vector(tiny.d_model, seed=3)
    term = SteeringVector("toy", layer, r, operator=scale_along).term(tiny, alpha)
    assert isinstance(term, ScaleAlongTerm) and term.layer == layer
    ids, mask = tiny.tokenize(PROMPTS)
    base = record_residuals(tiny, ids, mask, [layer])[layer]
    steered = record_residuals(tiny, ids, mask, [layer], steering=steering(tiny, term))[layer]
    r_hat = r / r.norm()
    want = base + alpha * (base @ r_hat).unsqueeze(-1) * r_hat  # the reference computation
    assert torch.allclose(steered, want, atol=1e-6)
    assert not torch.allclose(steered, base, atol=1e-3)


def test_the_registry_answers_what_callers_need_without_the_name(scale_along):
    op = get_operator(scale_along)
    assert op.label == "scale-along" and not op.additive and not op.needs_reference
    assert operator_names()[:2] == ("add", "ace") and scale_along in operator_names()
    assert get_operator("add").additive and get_operator("ace").needs_reference
    toy = SteeringVector("toy", 3, torch.ones(8), operator=scale_along)
    # what follows from "not additive" holds for the new operator without any code naming it
    with pytest.raises(VectorError, match="scale-along.*instead of adding"):
        combine([(toy, 1.0)])
    with pytest.raises(VectorError, match="scale-along"):
        2 * toy
    with pytest.raises(VectorError, match="scale-along"):
        export_gguf(toy, "/nonexistent/x.gguf", "llama")
    back = from_safetensors_bytes(to_safetensors_bytes(toy))
    assert back.operator == scale_along and torch.equal(back.direction, toy.direction)
    with pytest.raises(VectorError, match="Only ACE"):
        SteeringVector("toy", 3, torch.ones(8), operator=scale_along, reference=torch.ones(8))


def test_the_side_by_side_view_masks_any_operator_off_the_unsteered_column(tiny_hf, scale_along):
    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=5)
    req = SideBySide(prompt="hello", layer=1, vector=random_unit_vector(tiny_hf.d_model, 3), alpha=4.0,
                     n_samples=2, config=cfg, operator=scale_along)
    last = list(side_by_side(tiny_hf, req))[-1]
    plain = generate(tiny_hf, [tiny_hf.format_prompt("hello")] * 2, cfg)
    assert last.done and last.unsteered == plain.texts


def test_add_and_ace_are_registered_operators(tiny_hf):
    d = tiny_hf.d_model
    v, a0 = random_unit_vector(d, 1), random_unit_vector(d, 2)
    add = SteeringVector("v", 1, v).term(tiny_hf, 2.0)
    assert type(add) is SteeringTerm and torch.equal(add.delta, make_term(tiny_hf, 1, v, 2.0).delta)
    ace = operator_term(tiny_hf, "ace", 1, v, 0.5, reference=a0)
    assert isinstance(ace, AceTerm) and torch.equal(ace.reference, a0)
    with pytest.raises(SteeringError, match="needs a reference"):
        operator_term(tiny_hf, "ace", 1, v, 0.5)
    with pytest.raises(SteeringError, match="takes no reference"):
        operator_term(tiny_hf, "add", 1, v, 0.5, reference=a0)


def test_unknown_operators_are_refused_with_the_known_ones_listed(tiny_hf):
    assert TOY not in operator_names()  # the fixture unregistered it
    with pytest.raises(VectorError, match=r"Unknown operator 'scale_along'; known operators are add, ace"):
        SteeringVector("v", 1, torch.ones(4), operator=TOY)
    with pytest.raises(SteeringCoreError, match="Unknown operator 'nope'.*add, ace"):
        operator_term(tiny_hf, "nope", 1, random_unit_vector(tiny_hf.d_model), 1.0)
    with pytest.raises(SteeringError, match="lower-case word"):
        register_operator("Not A Name")
    with pytest.raises(SteeringError, match="already registered"):
        register_operator("add")(lambda *a, **k: None)
    assert get_operator("add").additive  # the failed re-registration left "add" alone


def test_the_sweep_steers_with_any_registered_operator(tiny_hf, scale_along):
    """The sweep takes the operator by name (a saved vector's ``operator``): α = 0 is the same
    unsteered point for every operator, a non-zero α steers differently from addition, ΔCE (which
    probes α·v added) is left out for a non-additive operator, and the cache keeps them apart."""
    from steering_core.measure.sweep import SweepSpec, run_sweep, sweep_key

    v = random_unit_vector(tiny_hf.d_model, 1)
    big = 3 * tiny_hf.residual_norms()[1]
    spec = SweepSpec(prompts=("hello", "the weather"), alphas=(big,), samples=2, new_tokens=6, chat=False,
                     keywords=("the", "a"))
    added = run_sweep(tiny_hf, v, 1, spec)
    toy = run_sweep(tiny_hf, v, 1, spec, operator=scale_along)
    assert toy[0].alpha == 0.0 and toy[0].samples == added[0].samples
    assert toy[1].samples != added[1].samples
    assert "dce" in added[1].scores and "dce" not in toy[1].scores
    assert sweep_key("m", v, 1, spec, operator=scale_along) != sweep_key("m", v, 1, spec)
    assert sweep_key("m", v, 1, spec, operator="add") == sweep_key("m", v, 1, spec)  # old cache keys hold
    with pytest.raises(SteeringError, match="Unknown operator"):
        run_sweep(tiny_hf, v, 1, spec, operator="nope")
