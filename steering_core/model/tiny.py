"""Tiny random models with a real tokenizer: tests run in seconds, and the app can be tried
without downloading weights.

Both backends are covered (a Hugging Face Llama and a TransformerLens config), so every
steering guarantee can be checked on each.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from steering_core.errors import ModelLoadError
from steering_core.model.steerable import SteerableModel

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer with no merges: any Unicode text round-trips, built in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def _saved_tiny_tokenizer() -> Any:
    """TransformerLens re-opens tokenizers by path, so the tiny one must exist on disk."""
    import tempfile

    from transformers import AutoTokenizer

    folder = Path(tempfile.gettempdir()) / f"steering_core_tiny_tokenizer_{os.getuid()}"
    if not (folder / "tokenizer.json").exists():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tiny_tokenizer().save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder)


def tiny_model(
    backend: str = "hf", n_layers: int = 2, d_model: int = 64, seed: int = 0, n_ctx: int = 256
) -> SteerableModel:
    """A random model with a real tokenizer: for tests and for trying the app without weights."""
    tok = tiny_tokenizer()
    vocab = len(tok)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if backend == "hf":
            from transformers import LlamaConfig, LlamaForCausalLM

            cfg = LlamaConfig(
                vocab_size=vocab,
                hidden_size=d_model,
                intermediate_size=2 * d_model,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=n_ctx,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                tie_word_embeddings=True,
                initializer_range=0.2,
            )
            hf = LlamaForCausalLM(cfg)
            return SteerableModel.from_hf(hf, tok, f"tiny-llama-{n_layers}x{d_model}", "tiny")
        if backend == "tl":
            from transformer_lens import HookedTransformer, HookedTransformerConfig

            cfg = HookedTransformerConfig(
                n_layers=n_layers,
                d_model=d_model,
                n_ctx=n_ctx,
                d_head=d_model // 4,
                n_heads=4,
                d_vocab=vocab,
                act_fn="gelu",
                normalization_type="LN",
                positional_embedding_type="rotary",
                default_prepend_bos=False,
                seed=seed,
            )
            tl = HookedTransformer(cfg, tokenizer=_saved_tiny_tokenizer(), default_padding_side="left")
            return SteerableModel.from_transformer_lens(tl, f"tiny-tl-{n_layers}x{d_model}", source="tiny")
    finally:
        torch.random.set_rng_state(gen_state)
    raise ModelLoadError(f"Unknown tiny backend {backend!r}; use 'hf' or 'tl'.")
