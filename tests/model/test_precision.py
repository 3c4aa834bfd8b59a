"""The precision rule and the fast path: bf16 where the hardware has it, equal to fp32 within a
stated tolerance, and steered = unsteered at α = 0 bit for bit in each precision."""

from __future__ import annotations

import pytest
import torch

from steering_core import GenerationConfig, generate, load_model
from steering_core.errors import SteeringCoreError
from steering_core.model import precision
from steering_core.model.attention import NAME as DECODE_ATTENTION

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]


def test_env_overrides_and_hardware_rule(monkeypatch):
    monkeypatch.setenv("STEERING_PRECISION", "fp32")
    assert precision.fast_dtype("cpu") == torch.float32
    monkeypatch.setenv("STEERING_PRECISION", "bf16")
    assert precision.fast_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv("STEERING_PRECISION", "fp64")
    with pytest.raises(SteeringCoreError, match="auto, fp32 or bf16"):
        precision.fast_dtype("cpu")
    monkeypatch.setenv("STEERING_PRECISION", "auto")
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert precision.fast_dtype("cpu") == torch.float32  # emulated bf16 is slower: keep fp32
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert precision.fast_dtype("cpu") == torch.bfloat16
    assert precision.resolve("fp32") == torch.float32 and precision.resolve(torch.bfloat16) == torch.bfloat16
    with pytest.raises(SteeringCoreError, match="precision must be"):
        precision.resolve("half-ish")


def test_tiny_models_stay_fp32_unless_asked(monkeypatch):
    monkeypatch.setenv("STEERING_PRECISION", "bf16")
    assert load_model("tiny").dtype == torch.float32
    assert load_model("tiny", precision="auto").dtype == torch.bfloat16
    assert load_model("tiny", precision="bf16").dtype == torch.bfloat16


def _logits(model, ids):
    with torch.no_grad():
        return model.backend.forward(ids, torch.ones_like(ids)).float()


def test_bf16_logits_equal_fp32_within_tolerance():
    """Stated tolerance: next-token distributions of the bf16 model are within 0.02 nats KL of fp32
    on a tiny random model (the embedded model measures ~0.002, docs/design.md §Precision)."""
    fp = load_model("tiny", precision="fp32")
    bf = load_model("tiny", precision="bf16")
    ids = torch.randint(0, 200, (4, 24), generator=torch.Generator().manual_seed(0))
    a, b = _logits(fp, ids), _logits(bf, ids)
    kl = torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    assert float(kl.mean()) < 0.02
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_steered_at_alpha_zero_equals_unsteered_bit_for_bit(prec):
    model = load_model("tiny", precision=prec)
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=3, stop_at_eos=False)
    plain = generate(model, PROMPTS, cfg)
    zero = generate(model, PROMPTS, cfg, steering=[(1, v, 0.0)])
    assert zero.token_ids == plain.token_ids
    moved = generate(model, PROMPTS, cfg, steering=[(1, v, 40.0)])
    assert moved.token_ids != plain.token_ids  # and steering does act in this precision


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_decode_attention_equals_sdpa_and_cached_equals_uncached(prec):
    """The decode-step attention replaces SDPA for one-query steps only; greedy KV-cached decoding
    equals re-running the whole sequence each step."""
    model = load_model("tiny", precision=prec)
    assert model.module.config._attn_implementation == DECODE_ATTENTION
    cfg = GenerationConfig(max_new_tokens=8, greedy=True, stop_at_eos=False)
    res = generate(model, PROMPTS[:1], cfg)
    ids, _ = model.tokenize(PROMPTS[:1])
    seq = ids
    for _ in range(8):
        seq = torch.cat([seq, _logits(model, seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert seq[0, ids.shape[1]:].tolist() == res.token_ids[0]
    model.module.set_attn_implementation("sdpa")
    try:
        assert generate(model, PROMPTS, cfg).token_ids == generate(load_model("tiny", precision=prec), PROMPTS,
                                                                     cfg).token_ids
    finally:
        model.module.set_attn_implementation(DECODE_ATTENTION)


# -- packed bf16 linears (steering_core.model.packed) -----------------------------------------------

def _packable() -> bool:
    from steering_core.model.packed import _ops_available
    return _ops_available()


def test_packed_bf16_linears_give_the_same_bits_as_plain_ones():
    """Packing is a speed change only: on an AMX machine (this project's reference) logits and
    generated tokens are those of the plain bf16 layers bit for bit; elsewhere oneDNN may block the
    plain weight differently, so logits agree to bf16 rounding. Gradients always use the plain layer."""
    from steering_core.model.packed import packed_count, unpack_linears
    from steering_core.model.precision import cpu_bf16_flags

    packed = load_model("tiny", precision="bf16")
    plain = load_model("tiny", precision="bf16")
    unpack_linears(plain.module)
    if _packable():
        assert packed_count(packed.module) > 0
    assert packed_count(plain.module) == 0
    ids = torch.randint(0, 200, (3, 20), generator=torch.Generator().manual_seed(1))
    if "amx_bf16" in cpu_bf16_flags():
        assert torch.equal(_logits(packed, ids), _logits(plain, ids))
        cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, top_k=20, seed=3)
        assert generate(packed, ["a b c", "d e"], cfg).token_ids == generate(plain, ["a b c", "d e"], cfg).token_ids
    else:
        torch.testing.assert_close(_logits(packed, ids), _logits(plain, ids), rtol=2e-2, atol=2e-2)

    def grad(model):  # a trained steering adaptor back-propagates through the frozen model this way
        emb = model.module.get_input_embeddings()(ids).detach().requires_grad_(True)
        model.module(inputs_embeds=emb).logits.float().sum().backward()
        return emb.grad

    g_packed, g_plain = grad(packed), grad(plain)
    assert g_packed is not None and torch.equal(g_packed, g_plain)


def test_casting_a_packed_model_back_to_fp32_unpacks_it():
    from steering_core.model.packed import packed_count

    model = load_model("tiny", precision="bf16").to_dtype(torch.float32)
    assert packed_count(model.module) == 0
    ids = torch.randint(0, 200, (2, 8), generator=torch.Generator().manual_seed(2))
    assert _logits(model, ids).dtype == torch.float32
    model.to_dtype(torch.bfloat16)
    assert packed_count(model.module) == (len([m for m in model.module.modules() if isinstance(m, torch.nn.Linear)])
                                          if _packable() else 0)


def test_models_above_the_size_cap_stay_plain(monkeypatch):
    """The packed copy doubles the linear weights' memory: big models keep the plain layers."""
    from steering_core.model import packed

    monkeypatch.setattr(packed, "MAX_PACKED_PARAMS", 10)
    model = load_model("tiny", precision="bf16")
    assert packed.packed_count(model.module) == 0
    ids = torch.randint(0, 200, (2, 8), generator=torch.Generator().manual_seed(2))
    assert _logits(model, ids).dtype == torch.float32  # runs, on the plain layers


def test_a_copied_packed_model_runs_on_its_own_weights():
    """Packed layers carry their packed weight with them: a deep copy whose weights are then
    changed (after unpacking, as the module says) computes with the new weights, not the original's."""
    import copy

    from steering_core.model.packed import pack_linears, packed_count, unpack_linears

    model = load_model("tiny", precision="bf16")
    if not _packable():
        pytest.skip("this PyTorch or CPU cannot pack bf16 linears (oneDNN)")
    twin = copy.deepcopy(model.module)
    assert packed_count(twin) == packed_count(model.module) > 0
    unpack_linears(twin)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(0.5)
    pack_linears(twin)
    ids = torch.randint(0, 200, (2, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = model.module(input_ids=ids).logits
        b = twin(input_ids=ids).logits
    assert not torch.equal(a, b)
