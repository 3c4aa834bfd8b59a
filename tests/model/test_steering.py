"""The steering rule of docs/design.md §Steering semantics, asserted exactly on tiny random
models (both backends)."""

from __future__ import annotations

import threading

import pytest
import torch

from steering_core import (
    GenerationConfig,
    SteeringError,
    generate,
    random_unit_vector,
    record_residuals,
    steer,
    steering,
)
from steering_core.model.hooks import installed_hook_count

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]


def _logits(model, texts, st=None):
    ids, mask = model.tokenize(texts)
    with torch.no_grad(), steer(model, st):
        return model.backend.forward(ids, mask)


def test_residual_changes_by_exactly_alpha_v_at_every_position(tiny):
    ids, mask = tiny.tokenize(PROMPTS)
    layer, alpha = 1, 3.5
    v = random_unit_vector(tiny.d_model, seed=1)
    base = record_residuals(tiny, ids, mask, [layer])[layer]
    steered = record_residuals(tiny, ids, mask, [layer], steering=[(layer, v, alpha)])[layer]
    assert torch.equal(steered, base + alpha * v)  # bit-exact, every row and position
    assert (steered - base).norm(dim=-1).min() > 3.4  # prompt positions included, none skipped


def test_later_layers_see_the_steered_residual(tiny):
    ids, mask = tiny.tokenize(PROMPTS[:1])
    v = random_unit_vector(tiny.d_model, seed=2)
    base = record_residuals(tiny, ids, mask, [0, 2])
    steered = record_residuals(tiny, ids, mask, [0, 2], steering=[(0, v, 5.0)])
    assert torch.equal(steered[0], base[0] + 5.0 * v)
    assert not torch.allclose(steered[2], base[2])


def test_per_row_vectors_match_each_row_alone(tiny):
    ids, mask = tiny.tokenize(PROMPTS)
    vecs = torch.stack([random_unit_vector(tiny.d_model, seed=s) for s in range(3)])
    alphas = torch.tensor([2.0, -4.0, 0.0])
    batch = record_residuals(tiny, ids, mask, [1], steering=[(1, vecs, alphas)])[1]
    base = record_residuals(tiny, ids, mask, [1])[1]
    assert torch.equal(batch, base + (alphas[:, None] * vecs)[:, None, :])
    cfg = GenerationConfig(max_new_tokens=12, greedy=True, stop_at_eos=False)
    together = generate(tiny, PROMPTS, cfg, steering=[(1, vecs, alphas * 10)])
    for i, prompt in enumerate(PROMPTS):
        alone = generate(tiny, [prompt], cfg, steering=[(1, vecs[i], float(alphas[i] * 10))])
        assert together.token_ids[i] == alone.token_ids[0]


def test_per_row_sampling_matches_solo_with_same_seed(tiny):
    vecs = torch.stack([random_unit_vector(tiny.d_model, seed=s) for s in range(3)]) * 6
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, top_k=20, seed=7, stop_at_eos=False)
    together = generate(tiny, PROMPTS, cfg, steering=[(2, vecs, 1.0)], row_seeds=[7, 8, 9])
    for i, prompt in enumerate(PROMPTS):
        alone = generate(tiny, [prompt], cfg, steering=[(2, vecs[i], 1.0)], row_seeds=[7 + i])
        assert together.token_ids[i] == alone.token_ids[0]


def _uncached_greedy(model, prompt, n, st):
    ids, mask = model.tokenize([prompt])
    out = []
    for _ in range(n):
        with torch.no_grad(), steer(model, st):
            logits = model.backend.forward(ids, mask)
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
    return out


def test_kv_cached_steered_generation_equals_uncached(tiny):
    v = random_unit_vector(tiny.d_model, seed=3)
    st = steering(tiny, (1, v, 8.0))
    cfg = GenerationConfig(max_new_tokens=16, greedy=True, stop_at_eos=False)
    for prompt in PROMPTS[:2]:
        cached = generate(tiny, [prompt], cfg, steering=st).token_ids[0]
        assert cached == _uncached_greedy(tiny, prompt, 16, st)
    unsteered = generate(tiny, [PROMPTS[0]], cfg).token_ids[0]
    assert unsteered != generate(tiny, [PROMPTS[0]], cfg, steering=st).token_ids[0]


def test_alpha_zero_is_bit_for_bit_no_steering(tiny):
    v = random_unit_vector(tiny.d_model, seed=4)
    assert torch.equal(_logits(tiny, PROMPTS, [(1, v, 0.0)]), _logits(tiny, PROMPTS))
    cfg = GenerationConfig(max_new_tokens=8, seed=3, stop_at_eos=False)
    assert generate(tiny, PROMPTS, cfg, steering=[(1, v, 0.0)]).token_ids == generate(tiny, PROMPTS, cfg).token_ids


def test_several_terms_compose(tiny):
    v1, v2 = random_unit_vector(tiny.d_model, 5), random_unit_vector(tiny.d_model, 6)
    both = _logits(tiny, PROMPTS, [(1, v1, 2.0), (1, v2, -3.0)])
    summed = _logits(tiny, PROMPTS, [(1, 2.0 * v1 - 3.0 * v2, 1.0)])
    assert torch.allclose(both, summed, atol=1e-5)
    ids, mask = tiny.tokenize(PROMPTS)
    two_layers = record_residuals(tiny, ids, mask, [0], steering=[(0, v1, 2.0), (2, v2, 9.0)])[0]
    assert torch.equal(two_layers, record_residuals(tiny, ids, mask, [0])[0] + 2.0 * v1)


def test_no_hook_remains_after_exception(tiny):
    v = random_unit_vector(tiny.d_model, seed=7)
    clean = _logits(tiny, PROMPTS)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, [(1, v, 10.0)]):
            assert installed_hook_count(tiny) == 1
            raise RuntimeError("boom")
    assert installed_hook_count(tiny) == 0
    assert all(len(tiny.backend.layer_module(i)._forward_hooks) == 0 for i in range(tiny.n_layers))
    assert torch.equal(_logits(tiny, PROMPTS), clean)


def test_four_threads_steering_at_once_get_their_solo_results(tiny):
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=11, stop_at_eos=False)
    vecs = {name: random_unit_vector(tiny.d_model, seed=s) * 12 for name, s in (("a", 20), ("b", 21), ("c", 22))}
    vecs["none"] = None
    solo = {k: generate(tiny, PROMPTS, cfg, steering=None if v is None else [(1, v, 1.0)]).token_ids
            for k, v in vecs.items()}
    assert len({str(v) for v in solo.values()}) == 4  # four distinct outcomes to keep apart
    barrier = threading.Barrier(len(vecs))
    got: dict[str, list] = {k: [] for k in vecs}
    errors: list[BaseException] = []

    def worker(name):
        try:
            barrier.wait()
            for _ in range(4):
                v = vecs[name]
                if v is None:
                    got[name].append(generate(tiny, PROMPTS, cfg).token_ids)
                else:
                    with steer(tiny, [(1, v, 1.0)]):  # the scope form, held while the others run
                        got[name].append(generate(tiny, PROMPTS, cfg).token_ids)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in vecs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in vecs:
        assert got[k] == [solo[k]] * 4
    assert installed_hook_count(tiny) == 0


@pytest.mark.parametrize(
    "layer,vector,alpha,match",
    [
        (1, "ok", float("nan"), "finite"),
        (1, "ok", float("inf"), "finite"),
        (1, "nan", 1.0, "NaN"),
        (1, "short", 1.0, "d_model"),
        (99, "ok", 1.0, "out of range"),
        (-1, "ok", 1.0, "out of range"),
        ("1", "ok", 1.0, "integer"),
    ],
)
def test_bad_steering_input_raises_typed_error(tiny_hf, layer, vector, alpha, match):
    d = tiny_hf.d_model
    v = {"ok": torch.ones(d), "nan": torch.full((d,), float("nan")), "short": torch.ones(d - 1)}[vector]
    with pytest.raises(SteeringError, match=match):
        steering(tiny_hf, (layer, v, alpha))


def test_per_row_vectors_with_wrong_batch_are_refused(tiny_hf):
    vecs = torch.ones(2, tiny_hf.d_model)
    from steering_core import GenerationError

    with pytest.raises(GenerationError, match="per-row"):
        generate(tiny_hf, PROMPTS, GenerationConfig(max_new_tokens=2), steering=[(1, vecs, 1.0)])
    with pytest.raises(SteeringError, match="rows"):
        _logits(tiny_hf, PROMPTS, [(1, vecs, 1.0)])
    assert installed_hook_count(tiny_hf) == 0


# -- ACE: an operator other than addition -------------------------------------------------------


def test_ace_moves_the_reference_point_to_exactly_a0_plus_alpha_r():
    from steering_core.model.operators import AceTerm

    g = torch.Generator().manual_seed(0)
    r, a0 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    term = AceTerm(layer=0, vector=r, alpha=0.7, reference=a0)
    hidden = a0.expand(2, 3, 16).clone()
    out = term.apply(hidden, term.delta)
    assert torch.allclose(out, (a0 + 0.7 * r).expand(2, 3, 16), atol=1e-5)


def test_ace_sets_the_component_along_r_and_keeps_the_rest():
    from steering_core.model.operators import AceTerm

    g = torch.Generator().manual_seed(1)
    r, a0 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    r_hat = r / r.norm()
    term = AceTerm(layer=0, vector=r, alpha=-1.3, reference=a0)
    hidden = 5 * torch.randn(4, 7, 16, generator=g)
    out = term.apply(hidden, term.delta)
    # set, not added to: every position ends at the same component, whatever it started at
    target = float(a0 @ r_hat) - 1.3 * float(r.norm())
    assert torch.allclose(out @ r_hat, torch.full((4, 7), target), atol=1e-4)
    perp = lambda x: x - (x @ r_hat).unsqueeze(-1) * r_hat  # noqa: E731
    assert torch.allclose(perp(out), perp(hidden), atol=1e-4)


def test_ace_through_the_model_sets_the_residual_component(tiny):
    from steering_core.model.operators import ace_term

    d = tiny.d_model
    r, a0 = random_unit_vector(d, seed=3) * 2.0, random_unit_vector(d, seed=4)
    ids, mask = tiny.tokenize(PROMPTS)
    st = steering(tiny, ace_term(tiny, 1, r, a0, alpha=0.5))
    res = record_residuals(tiny, ids, mask, [1], steering=st)[1]
    r_hat = r / r.norm()
    comp = (res.float() @ r_hat)[mask.bool()]
    assert torch.allclose(comp, torch.full_like(comp, float(a0 @ r_hat) + 0.5 * 2.0), atol=1e-3)
    # and it is not a no-op even at α = 0 (it still moves every activation onto a₀'s level)
    assert not steering(tiny, ace_term(tiny, 1, r, a0, alpha=0.0)).is_noop()


def test_ace_term_validates_its_reference(tiny):
    from steering_core.model.operators import ace_term

    with pytest.raises(SteeringError, match="reference"):
        ace_term(tiny, 1, random_unit_vector(tiny.d_model), torch.zeros(3))
    with pytest.raises(SteeringError, match="NaN"):
        ace_term(tiny, 1, random_unit_vector(tiny.d_model), torch.full((tiny.d_model,), float("nan")))
    with pytest.raises(SteeringError, match="non-zero"):
        ace_term(tiny, 1, torch.zeros(tiny.d_model), torch.zeros(tiny.d_model))
