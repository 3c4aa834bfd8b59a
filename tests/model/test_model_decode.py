"""The few-row decoding step on fused weights (steering_core.model.decode): the Hugging Face block's
results to float rounding, the same tokens, weights that stay the model's own (edits are seen), and
the plain forward wherever the step does not apply; in fp32 and, on CPUs with oneDNN's packed bf16
kernels, in bf16."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch

from steering_core import GenerationConfig, generate, load_model
from steering_core.model import decode
from steering_core.model.decode import fuse_blocks, fused_count, unfuse_blocks

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]
SAMPLED = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=5, stop_at_eos=False)


def _pair(precision: str = "fp32"):
    fused = load_model("tiny", precision=precision)
    plain = load_model("tiny", precision=precision)
    unfuse_blocks(plain.module)
    return fused, plain


def _count_steps(monkeypatch) -> list[int]:
    """Rows of every fused product the step computes (in either precision)."""
    seen: list[int] = []
    real = decode._Fused.product

    def spy(self, which, x):
        seen.append(x.shape[0])
        return real(self, which, x)

    monkeypatch.setattr(decode._Fused, "product", spy)
    return seen


def test_fp32_models_decode_on_fused_views_of_their_own_weights():
    fused, plain = _pair()
    blocks = fused.module.model.layers
    assert fused_count(fused.module) == len(blocks) > 0 and fused_count(plain.module) == 0
    a = blocks[0].self_attn
    f = blocks[0]._steering_fused
    assert a.q_proj.weight.data_ptr() == f.qkv.data_ptr()  # views, not copies
    for (name, p), (name2, q) in zip(fused.module.named_parameters(), plain.module.named_parameters()):
        assert name == name2 and torch.equal(p, q)  # the same weights, whatever their storage


@pytest.mark.parametrize("cfg", [SAMPLED, GenerationConfig(max_new_tokens=12, greedy=True, stop_at_eos=False)])
def test_fused_decoding_gives_the_plain_blocks_tokens_and_logits(cfg, monkeypatch):
    fused, plain = _pair()
    rows = _count_steps(monkeypatch)
    assert generate(fused, PROMPTS, cfg).token_ids == generate(plain, PROMPTS, cfg).token_ids
    assert rows and set(rows) == {len(PROMPTS)}  # the step ran, on decoding steps only
    ids, mask = fused.tokenize(PROMPTS)
    with torch.no_grad():
        la, sa = fused.backend.start(ids, mask)
        lb, sb = plain.backend.start(ids, mask)
        nxt = la.argmax(-1)
        for _ in range(4):
            la, lb = fused.backend.step(nxt, sa), plain.backend.step(nxt, sb)
            torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-4)
            nxt = la.argmax(-1)


def test_steering_and_recording_hooks_on_blocks_still_act():
    """Steering lives in hooks on the blocks, which the step keeps: α = 0 equals unsteered bit for
    bit, a real α moves the text exactly as on the plain blocks."""
    fused, plain = _pair()
    v = torch.randn(fused.d_model, generator=torch.Generator().manual_seed(1))
    base = generate(fused, PROMPTS, SAMPLED).token_ids
    assert generate(fused, PROMPTS, SAMPLED, steering=[(1, v, 0.0)]).token_ids == base
    moved = generate(fused, PROMPTS, SAMPLED, steering=[(1, v, 40.0)]).token_ids
    assert moved != base
    assert moved == generate(plain, PROMPTS, SAMPLED, steering=[(1, v, 40.0)]).token_ids


def test_an_in_place_weight_edit_is_seen_by_the_fused_step(monkeypatch):
    """An ablation edits a weight in place; the fused matrices are that weight, so it counts."""
    fused, plain = _pair()
    before = generate(fused, PROMPTS, SAMPLED).token_ids
    with torch.no_grad():
        for model in (fused, plain):
            for block in model.module.model.layers:
                block.mlp.up_proj.weight.mul_(-3.0)
                block.self_attn.k_proj.weight[:4] = 0
    rows = _count_steps(monkeypatch)
    after = generate(fused, PROMPTS, SAMPLED).token_ids
    assert rows  # still on the fused step
    assert after != before and after == generate(plain, PROMPTS, SAMPLED).token_ids


def test_the_plain_forward_runs_where_the_step_does_not_apply(monkeypatch):
    fused, plain = _pair()
    rows = _count_steps(monkeypatch)
    big = ["a b"] * (decode.MAX_ROWS + 1)
    cfg = GenerationConfig(max_new_tokens=3, temperature=1.0, seed=1, stop_at_eos=False)
    assert generate(fused, big, cfg).token_ids == generate(plain, big, cfg).token_ids
    assert rows == []  # too many rows

    calls = []
    handle = fused.module.model.layers[1].mlp.register_forward_hook(lambda *_: calls.append(1))
    try:
        generate(fused, PROMPTS, cfg)
    finally:
        handle.remove()
    n = fused_count(fused.module)
    # a hook inside a block: that block runs every step on the plain forward, the others fused
    assert len(calls) == 3 and len(rows) == 2 * 4 * (n - 1)  # 2 steps × 4 products × the other blocks
    rows.clear()

    block = fused.module.model.layers[0]
    new = torch.randn_like(block.self_attn.q_proj.weight)
    block.self_attn.q_proj.weight = torch.nn.Parameter(new, requires_grad=False)  # no longer a view
    plain.module.model.layers[0].self_attn.q_proj.weight = torch.nn.Parameter(new.clone(), requires_grad=False)
    rows.clear()
    assert generate(fused, PROMPTS, SAMPLED).token_ids == generate(plain, PROMPTS, SAMPLED).token_ids
    assert set(rows) == {len(PROMPTS)}  # the other blocks still fused
    assert len(rows) == 4 * (SAMPLED.max_new_tokens - 1) * (fused_count(fused.module) - 1)


def test_casts_unfuse_and_fp32_fuses_again():
    model = load_model("tiny", precision="fp32")
    n = fused_count(model.module)
    weights = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.to_dtype(torch.bfloat16)
    assert fused_count(model.module) == (n if _packs() else 0)  # bf16 fuses on packed layers only
    model.to_dtype(torch.float32)
    assert fused_count(model.module) == n
    assert unfuse_blocks(model.module) == n and fuse_blocks(model.module) == n
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, weights[k].to(v.dtype), rtol=1e-2, atol=1e-2)  # through bf16 and back


def test_a_fused_model_copies_and_saves_like_any_other():
    from transformers import AutoModelForCausalLM

    fused, plain = _pair()
    twin = copy.deepcopy(fused.module)
    with torch.no_grad():
        a = fused.module(input_ids=torch.tensor([[5, 6, 7]])).logits
        b = twin(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert torch.equal(a, b)
    with tempfile.TemporaryDirectory() as d:
        fused.module.save_pretrained(d)
        back = AutoModelForCausalLM.from_pretrained(d)
    for (k, p), (_, q) in zip(back.named_parameters(), plain.module.named_parameters()):
        assert torch.equal(p, q), k


# -- bf16, on packed layers ---------------------------------------------------------------------------


def _packs() -> bool:
    from steering_core.model.packed import _ops_available

    return _ops_available()


needs_packing = pytest.mark.skipif(not _packs(), reason="this CPU has no oneDNN bf16 kernels (no AVX512-BF16/AMX)")


@needs_packing
@pytest.mark.parametrize("cfg", [SAMPLED, GenerationConfig(max_new_tokens=12, greedy=True, stop_at_eos=False)])
def test_packed_bf16_blocks_decode_fused_with_the_plain_blocks_tokens_and_logits(cfg, monkeypatch):
    fused, plain = _pair("bf16")
    n = len(fused.module.model.layers)
    assert fused_count(fused.module) == n and fused.module.model.layers[0]._steering_fused.dtype == torch.bfloat16
    rows = _count_steps(monkeypatch)
    assert generate(fused, PROMPTS, cfg).token_ids == generate(plain, PROMPTS, cfg).token_ids
    assert rows and set(rows) == {len(PROMPTS)}  # the step ran, on decoding steps only
    assert len(rows) == 4 * n * (cfg.max_new_tokens - 1)  # 4 products a block, not 7
    ids, mask = fused.tokenize(PROMPTS)
    with torch.no_grad():
        la, sa = fused.backend.start(ids, mask)
        lb, sb = plain.backend.start(ids, mask)
        nxt = la.argmax(-1)
        for _ in range(4):
            la, lb = fused.backend.step(nxt, sa), plain.backend.step(nxt, sb)
            assert la.dtype == torch.bfloat16
            torch.testing.assert_close(la.float(), lb.float(), rtol=2e-2, atol=2e-2)  # bf16 rounding at most
            nxt = la.argmax(-1)


@needs_packing
def test_bf16_steps_stay_fused_up_to_their_own_larger_row_limit(monkeypatch):
    """bf16 fuses calls the fp32 step leaves plain (the effect measurement's 224 rows), and leaves
    the pack build's larger calls on the plain blocks."""
    fused, plain = _pair("bf16")
    assert decode.MAX_ROWS < decode.MAX_ROWS_PACKED
    rows = _count_steps(monkeypatch)
    cfg = GenerationConfig(max_new_tokens=3, temperature=1.0, seed=2, stop_at_eos=False)
    mid = [PROMPTS[i % len(PROMPTS)] for i in range(decode.MAX_ROWS + 1)]
    assert generate(fused, mid, cfg).token_ids == generate(plain, mid, cfg).token_ids
    assert set(rows) == {decode.MAX_ROWS + 1}
    rows.clear()
    big = ["a b"] * (decode.MAX_ROWS_PACKED + 1)
    assert generate(fused, big, cfg).token_ids == generate(plain, big, cfg).token_ids
    assert rows == []


@needs_packing
def test_bf16_steering_at_alpha_zero_is_unsteered_and_a_real_alpha_moves_it_as_on_plain_blocks():
    fused, plain = _pair("bf16")
    v = torch.randn(fused.d_model, generator=torch.Generator().manual_seed(1))
    base = generate(fused, PROMPTS, SAMPLED).token_ids
    assert generate(fused, PROMPTS, SAMPLED, steering=[(1, v, 0.0)]).token_ids == base
    moved = generate(fused, PROMPTS, SAMPLED, steering=[(1, v, 40.0)]).token_ids
    assert moved != base
    assert moved == generate(plain, PROMPTS, SAMPLED, steering=[(1, v, 40.0)]).token_ids


@needs_packing
def test_unpacking_a_bf16_model_ends_the_fused_step(monkeypatch):
    """Packed copies do not follow weight edits, so edits are made after unpacking, and then the
    block must run its own forward on the edited weights."""
    from steering_core.model.packed import pack_linears, unpack_linears

    fused, plain = _pair("bf16")
    rows = _count_steps(monkeypatch)
    unpack_linears(fused.module)
    unpack_linears(plain.module)
    with torch.no_grad():
        for model in (fused, plain):
            for block in model.module.model.layers:
                block.mlp.up_proj.weight.mul_(-3.0)
    assert generate(fused, PROMPTS, SAMPLED).token_ids == generate(plain, PROMPTS, SAMPLED).token_ids
    assert rows == []  # the record stays, but the step sees unpacked layers and steps aside
    pack_linears(fused.module)  # packed again, on the edited weights: the fused copies are stale
    pack_linears(plain.module)
    assert generate(fused, PROMPTS, SAMPLED).token_ids == generate(plain, PROMPTS, SAMPLED).token_ids
    assert rows == []


@needs_packing
def test_a_copied_bf16_model_decodes_fused_on_its_own_packed_weights(monkeypatch):
    fused, _ = _pair("bf16")
    twin = copy.deepcopy(fused.module)
    assert fused_count(twin) == fused_count(fused.module)
    f, g = fused.module.model.layers[0]._steering_fused, twin.model.layers[0]._steering_fused
    assert g.layers[0] is twin.model.layers[0].self_attn.q_proj and g.qkv is not f.qkv
    rows = _count_steps(monkeypatch)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        out_a = fused.module(input_ids=ids, use_cache=True)
        out_b = twin(input_ids=ids, use_cache=True)
        nxt = out_a.logits[:, -1:].argmax(-1)
        a = fused.module(input_ids=nxt, past_key_values=out_a.past_key_values).logits
        rows.clear()
        b = twin(input_ids=nxt, past_key_values=out_b.past_key_values).logits
    assert len(rows) == 4 * fused_count(twin) and torch.equal(a, b)  # the copy's step ran, on its copy
