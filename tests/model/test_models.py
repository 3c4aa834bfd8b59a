"""Model loading and the facts a SteerableModel reports, on tiny models (both backends) and once on the embedded one."""

from __future__ import annotations

import math

import pytest
import torch

import steering_core.model.loading as models_mod
from steering_core import (
    GenerationConfig,
    ModelLoadError,
    SteerableModel,
    generate,
    hook_name,
    layer_of_hook,
    load_model,
    record_residuals,
)
from steering_core.model.backends import Backend, HFBackend, TLBackend
from steering_core.model.hub import explain_load_failure as _explain_load_failure
from steering_core.model.steerable import REFERENCE_TEXTS
from steering_core.model.tiny import tiny_tokenizer

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]


# --- hook names --------------------------------------------------------------------------------


def test_hook_name_round_trips_through_layer_of_hook():
    for layer in range(12):
        assert hook_name(layer) == f"blocks.{layer}.hook_resid_post"
        assert layer_of_hook(hook_name(layer)) == layer
        assert layer_of_hook(hook_name(layer), n_layers=12) == layer


def test_resid_pre_names_the_output_of_the_previous_block():
    assert layer_of_hook("blocks.8.hook_resid_pre") == 7
    assert layer_of_hook("blocks.1.hook_resid_pre") == 0
    assert layer_of_hook("  blocks.3.hook_resid_post  ") == 3  # typed input is stripped
    # the last block's output is blocks.{n}.hook_resid_pre, which is still in range
    assert layer_of_hook("blocks.3.hook_resid_pre", n_layers=3) == 2


@pytest.mark.parametrize(
    "name,n_layers,match",
    [
        ("blocks.0.hook_resid_pre", None, "does not name the output"),
        ("blocks.3.hook_resid_post", 3, "does not name the output"),
        ("blocks.4.hook_resid_pre", 3, "does not name the output"),
        ("garbage", None, "not a residual-stream hook"),
        ("", None, "not a residual-stream hook"),
        ("blocks.x.hook_resid_post", None, "not a residual-stream hook"),
        ("blocks.-1.hook_resid_post", None, "not a residual-stream hook"),
        ("blocks.2.hook_resid_mid", None, "not a residual-stream hook"),
        ("blocks.2.attn.hook_z", None, "not a residual-stream hook"),
        ("blocks.2.hook_resid_post.extra", None, "not a residual-stream hook"),
    ],
)
def test_bad_hook_names_raise_model_load_error(name, n_layers, match):
    with pytest.raises(ModelLoadError, match=match) as info:
        layer_of_hook(name, n_layers)
    assert isinstance(info.value, ValueError)  # callers that only know ValueError still catch it


# --- facts on tiny models ------------------------------------------------------------------------


def test_tiny_model_facts(tiny):
    assert tiny.d_model == 64
    assert tiny.n_layers == 3
    assert tiny.hook_names == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    assert [layer_of_hook(h) for h in tiny.hook_names] == [0, 1, 2]
    assert tiny.default_layer == 1
    assert tiny.source == "tiny"
    assert tiny.eos_token_id == tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tiny.pad_token_id == tiny.tokenizer.convert_tokens_to_ids("<pad>")
    facts = tiny.describe()
    assert facts["backend"] == tiny.backend.kind
    assert (facts["d_model"], facts["n_layers"], facts["dtype"], facts["chat template"]) == (64, 3, "float32", "yes")
    # the hooked module for each layer really carries the residual stream of width d_model
    ids, mask = tiny.tokenize(PROMPTS)
    acts = record_residuals(tiny, ids, mask, range(tiny.n_layers))
    assert all(acts[layer].shape == (*ids.shape, tiny.d_model) for layer in range(tiny.n_layers))


def test_each_backend_offers_what_the_backend_protocol_asks(tiny):
    backend = tiny.backend
    assert isinstance(backend, HFBackend if backend.kind == "hf" else TLBackend)
    for name in [*Backend.__annotations__, "layer_module", "forward", "start", "step"]:
        assert hasattr(backend, name), name
    assert (backend.d_model, backend.n_layers, backend.model) == (tiny.d_model, tiny.n_layers, tiny.module)
    ids, mask = tiny.tokenize(PROMPTS)
    with torch.no_grad():
        full = backend.forward(ids, mask)[:, -1]
        first, _state = backend.start(ids, mask)  # the KV-cached prefill agrees with the plain forward
    assert torch.allclose(first, full, atol=1e-4)


def _reference_norms(model) -> list[float]:
    """Mean residual norm per layer over every real token except each row's first one, by hand."""
    ids, mask = model.tokenize(list(REFERENCE_TEXTS))
    acts = record_residuals(model, ids, mask, range(model.n_layers))
    out = []
    for layer in range(model.n_layers):
        norms = []
        for row in range(ids.shape[0]):
            real = mask[row].nonzero().flatten().tolist()
            assert real == list(range(real[0], ids.shape[1]))  # left padding: one contiguous block
            norms.append(acts[layer][row, real[1:]].norm(dim=-1))
        out.append(float(torch.cat(norms).double().mean()))
    return out


def test_residual_norms_equal_a_hand_computed_reference(tiny):
    norms = tiny.residual_norms()
    assert len(norms) == tiny.n_layers
    assert all(isinstance(n, float) and math.isfinite(n) and n > 0 for n in norms)
    assert norms == pytest.approx(_reference_norms(tiny), rel=1e-5)
    # the first real token really is left out: including it gives different numbers
    ids, mask = tiny.tokenize(list(REFERENCE_TEXTS))
    acts = record_residuals(tiny, ids, mask, [0])
    with_first = float(acts[0][mask.bool()].norm(dim=-1).mean())
    assert with_first != pytest.approx(norms[0], rel=1e-4)
    # cached, and the caller gets a copy it may change freely
    again = tiny.residual_norms()
    again[0] = -1.0
    assert tiny.residual_norms() == norms


def test_a_massive_activation_after_the_first_token_does_not_set_the_norm(tiny, monkeypatch):
    """Some models park a huge activation on a later token too (a first full stop): one such token
    among the reference text's would double the mean norm and shrink every α. It is left out, and
    the norm is the mean over the other tokens."""
    import steering_core.model.recording as recording

    real = recording.record_residuals

    def planted(model, ids, mask, layers):
        acts = real(model, ids, mask, layers)
        for layer in layers:
            first = int(mask[0].argmax())
            acts[layer][0, first + 2] *= 1000  # the third real token of the first text
        return acts

    # by hand, unplanted: every real token but each row's first, and but the planted one
    ids, mask = tiny.tokenize(list(REFERENCE_TEXTS))
    acts = real(tiny, ids, mask, list(range(tiny.n_layers)))
    keep = mask.bool().clone()
    keep[torch.arange(len(keep)), mask.argmax(-1)] = False
    keep[0, int(mask[0].argmax()) + 2] = False
    expect = [float(acts[layer][keep].double().norm(dim=-1).mean()) for layer in range(tiny.n_layers)]
    monkeypatch.setattr(recording, "record_residuals", planted)
    monkeypatch.setattr(tiny, "_norms", None)
    assert tiny.residual_norms() == pytest.approx(expect, rel=1e-5)


# --- text ----------------------------------------------------------------------------------------


def test_format_prompt_chat_and_raw(tiny):
    msg = "What is 2 + 2?"
    chat = tiny.format_prompt(msg)
    assert chat == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    assert msg in chat and chat.endswith("<|im_start|>assistant\n")
    assert tiny.format_prompt(msg, chat=False) == msg
    with_system = tiny.format_prompt(msg, system="Be brief.")
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert with_system.index("Be brief.") < with_system.index(msg)
    assert with_system.endswith("<|im_start|>assistant\n")


def test_format_prompt_without_chat_template_raises(tiny_hf):
    tok = tiny_tokenizer()
    tok.chat_template = None
    bare = SteerableModel(name="bare", backend=tiny_hf.backend, tokenizer=tok, source="tiny")
    with pytest.raises(ModelLoadError, match="no chat template"):
        bare.format_prompt("hi")
    assert bare.format_prompt("hi", chat=False) == "hi"


def test_tokenize_left_pads(tiny):
    texts = ["ab", "abcdefgh", "xyz"]
    ids, mask = tiny.tokenize(texts)
    assert ids.shape == mask.shape and ids.dtype == torch.long
    assert bool((mask[:, -1] == 1).all())  # last column is real for every row
    singles = [tiny.tokenize([t]) for t in texts]
    for row, (one_ids, one_mask) in enumerate(singles):
        n = int(mask[row].sum())
        assert n == one_ids.shape[1] and bool(one_mask.all())
        assert mask[row].tolist() == [0] * (ids.shape[1] - n) + [1] * n  # zeros only on the left
        assert ids[row, ids.shape[1] - n :].tolist() == one_ids[0].tolist()
        assert bool((ids[row, : ids.shape[1] - n] == tiny.pad_token_id).all())
    assert int(mask[1].sum()) == ids.shape[1]  # the longest row is unpadded
    # left padding leaves each row's last-token logits unchanged
    with torch.no_grad():
        batch_logits = tiny.backend.forward(ids, mask)[:, -1]
        for row, (one_ids, one_mask) in enumerate(singles):
            assert torch.allclose(batch_logits[row], tiny.backend.forward(one_ids, one_mask)[0, -1], atol=1e-4)


def test_tokenize_does_not_double_a_leading_bos(tiny):
    bos = tiny.tokenizer.bos_token
    bos_id = tiny.tokenizer.bos_token_id
    ids, mask = tiny.tokenize([tiny.format_prompt("hi"), bos + "plain"])
    for row in range(2):
        real = ids[row][mask[row].bool()].tolist()
        assert real[0] == bos_id
        assert real[1] != bos_id


# --- loading -------------------------------------------------------------------------------------


def test_load_model_hf_folder_gives_identical_logits(tiny_hf, tmp_path):
    tiny_hf.module.save_pretrained(tmp_path)
    tiny_hf.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(f"hf:{tmp_path}", precision="fp32")
    assert loaded.source == "huggingface"
    assert loaded.name == str(tmp_path)
    assert (loaded.d_model, loaded.n_layers, loaded.eos_token_id) == (64, 3, tiny_hf.eos_token_id)
    assert loaded.module is not tiny_hf.module
    assert loaded.format_prompt("hi") == tiny_hf.format_prompt("hi")
    ids, mask = tiny_hf.tokenize(PROMPTS)
    ids2, mask2 = loaded.tokenize(PROMPTS)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
    with torch.no_grad():
        assert torch.equal(loaded.backend.forward(ids, mask), tiny_hf.backend.forward(ids, mask))
    cfg = GenerationConfig(max_new_tokens=8, greedy=True, stop_at_eos=False)
    assert generate(loaded, PROMPTS, cfg).token_ids == generate(tiny_hf, PROMPTS, cfg).token_ids


def _one_line(msg: str) -> bool:
    return "\n" not in msg and "Traceback" not in msg and len(msg) < 600


def test_load_model_hf_missing_folder_raises_plain_error():
    with pytest.raises(ModelLoadError) as info:
        load_model("hf:/nonexistent")
    msg = str(info.value)
    assert msg == "The folder /nonexistent does not exist on this machine."
    assert _one_line(msg)


def test_a_folder_without_a_model_says_what_is_missing(tmp_path):
    """Library audit: the tokenizer's error was cut off at 'Couldn't instantiate … from one of:'."""
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError) as info:
        load_model(f"hf:{tmp_path}")
    assert str(info.value).startswith(f"The folder {tmp_path} is not a Hugging Face model folder: it has no "
                                      "config.json") and _one_line(str(info.value))


def test_load_model_tl_offline_says_so():
    with pytest.raises(ModelLoadError) as info:
        load_model("tl:gpt2-small")
    msg = str(info.value)
    assert "gpt2-small" in msg
    assert "not on this machine" in msg and "offline" in msg
    assert _one_line(msg)


@pytest.mark.parametrize("spec", ["tl:", "tl:   ", "  tl:"])
def test_load_model_empty_tl_name_raises(spec):
    with pytest.raises(ModelLoadError, match="Empty model name"):
        load_model(spec)


@pytest.mark.parametrize("spec", ["", "   ", "embedded", " embedded "])
def test_load_model_blank_spec_means_embedded(spec, monkeypatch):
    class Sentinel:
        source, device = "embedded", "cpu"

        def to_dtype(self, dtype):
            self.dtype = dtype
            return self

    sentinel = Sentinel()
    monkeypatch.setattr(models_mod, "load_embedded", lambda: sentinel)
    monkeypatch.setenv("STEERING_PRECISION", "bf16")
    assert load_model(spec) is sentinel and sentinel.dtype == torch.bfloat16


def test_load_model_tiny_specs():
    hf = load_model("tiny")
    tl = load_model("tiny-tl")
    assert (hf.backend.kind, hf.source, hf.n_layers, hf.d_model) == ("hf", "tiny", 2, 64)
    assert (tl.backend.kind, tl.source, tl.n_layers, tl.d_model) == ("tl", "tiny", 2, 64)


def test_explain_load_failure_classifies_errors():
    offline = _explain_load_failure("x/y", ConnectionError("boom"))
    assert "offline" in offline and "not on this machine" in offline
    unknown = _explain_load_failure("x/y", OSError("x/y is not a local folder and is not a valid model identifier"))
    assert unknown.startswith("Could not load 'x/y': no such model is known")
    other = _explain_load_failure("x/y", RuntimeError("first line\nsecond line"))
    assert other == "Could not load 'x/y': RuntimeError: first line"


# --- the embedded default ------------------------------------------------------------------------


def test_embedded_model_facts(embedded):
    assert embedded.source == "embedded"
    assert embedded.name == "SmolLM2-135M-Instruct"
    assert embedded.d_model == 576
    assert embedded.n_layers == 30
    assert len(embedded.hook_names) == 30 and embedded.hook_names[-1] == "blocks.29.hook_resid_post"
    assert embedded.chat_template
    assert embedded.eos_token_id == 2
    assert embedded.backend.kind == "hf"
    prompt = embedded.format_prompt("Hello")
    assert "Hello" in prompt and prompt.endswith("<|im_start|>assistant\n")
