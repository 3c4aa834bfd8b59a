"""The one face every loaded model shows: :class:`SteerableModel`, and residual hook names.

Whatever a model is underneath (see :mod:`steering_core.model.backends`), steering, generation,
SAEs and the measurements talk to this object: its facts (``d_model``, ``n_layers``, device,
chat template), its text handling (chat formatting, left-padded tokenisation) and the typical
residual norm per layer that gives an alpha its scale.

Hook names use TransformerLens' spelling, ``blocks.{l}.hook_resid_post`` = the residual stream
after block ``l``, for every backend, so SAEs from ``sae_lens`` line up by name.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from steering_core.errors import GenerationError, ModelLoadError
from steering_core.model.backends import Backend, HFBackend, TLBackend
from steering_core.model.decode import fuse_blocks, unfuse_blocks
from steering_core.model.fewrows import plain_few_rows, use_few_rows
from steering_core.model.packed import pack_linears, unpack_linears
from steering_core.names import unencodable_at

# Neutral text used to measure the typical residual norm per layer, so that an alpha can be
# read as "a fraction of what is normally there". Short, varied, unsteered-looking prose.
REFERENCE_TEXTS = (
    "The weather today is mild, with a light breeze coming from the west.",
    "She opened the book and began to read the first chapter aloud.",
    "In 1850 the town had fewer than two thousand inhabitants.",
    "To make the sauce, melt the butter and stir in the flour slowly.",
    "The committee will meet again next Tuesday to review the budget.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "He missed the train by a minute and had to wait for the next one.",
    "def add(a, b):\n    return a + b\n",
)

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_(resid_post|resid_pre|out|in)$")


@dataclass
class SteerableModel:
    """A loaded language model plus everything the UI and the maths need to know about it.

    The hook name ``blocks.{l}.hook_resid_post`` (TransformerLens' spelling) names the residual
    stream after block ``l`` for every backend, so SAEs from ``sae_lens`` line up by name.
    """

    name: str
    backend: Backend
    tokenizer: Any
    source: str  # "embedded", "transformer_lens", "huggingface" or "tiny"
    _norms: list[float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- construction ----------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: torch.nn.Module, tokenizer: Any, name: str, source: str) -> SteerableModel:
        """Wrap a Hugging Face causal LM, frozen in eval mode (steering never trains it)."""
        hf.eval()
        hf.requires_grad_(False)
        return cls(name=name, backend=HFBackend(hf), tokenizer=tokenizer, source=source)

    @classmethod
    def from_transformer_lens(cls, model: torch.nn.Module, name: str,
                              source: str = "transformer_lens") -> SteerableModel:
        """Wrap a TransformerLens ``HookedTransformer``, frozen in eval mode."""
        model.eval()
        model.requires_grad_(False)
        if model.tokenizer is None:
            raise ModelLoadError(f"TransformerLens model {name} has no tokenizer.")
        return cls(name=name, backend=TLBackend(model), tokenizer=model.tokenizer, source=source)

    # --- facts -----------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        return self.backend.model

    @property
    def d_model(self) -> int:
        return self.backend.d_model

    @property
    def n_layers(self) -> int:
        return self.backend.n_layers

    @property
    def n_ctx(self) -> int:
        return self.backend.n_ctx

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def to_dtype(self, dtype: torch.dtype) -> SteerableModel:
        """Cast the weights in place (see :mod:`steering_core.model.precision` for why and when); bf16
        linears on the CPU then run on pre-packed weights (:mod:`steering_core.model.packed`), fp32
        ones multiply a few rows the faster way round (:mod:`steering_core.model.fewrows`), and
        both decode a few rows on fused weights (:mod:`steering_core.model.decode`)."""
        if self.dtype != dtype:
            unpack_linears(self.module)
            plain_few_rows(self.module)
            unfuse_blocks(self.module)
            self.module.to(dtype)
        if dtype == torch.bfloat16:
            pack_linears(self.module)
            fuse_blocks(self.module)  # on the packed layers only
        elif dtype == torch.float32:
            use_few_rows(self.module)
            fuse_blocks(self.module)
        return self

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def hook_names(self) -> list[str]:
        return [hook_name(layer) for layer in range(self.n_layers)]

    @property
    def default_layer(self) -> int:
        """A middle layer: where steering vectors and SAEs usually work best."""
        return self.n_layers // 2

    # --- text ------------------------------------------------------------------
    def format_prompt(self, text: str, chat: bool = True, system: str | None = None) -> str:
        """Wrap a user message in the model's chat template (or return it raw)."""
        if not chat:
            return text
        if not self.chat_template:
            raise ModelLoadError(f"{self.name} has no chat template; use a raw prompt.")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def format_conversation(self, turns, system: str | None = None) -> str:
        """A multi-turn chat through the template: ``turns`` are (user, assistant) pairs, the last
        one's assistant ``None`` (the reply to generate). Without a chat template the turns are
        joined as plain "User:/Assistant:" text."""
        turns = list(turns)
        if not turns or turns[-1][1] is not None:
            raise ModelLoadError("A conversation must end with a user message awaiting a reply.")
        if not self.chat_template:
            lines = [f"User: {u}\nAssistant: {a}" for u, a in turns[:-1]]
            return "\n".join(lines + [f"User: {turns[-1][0]}\nAssistant:"])
        messages = [{"role": "system", "content": system}] if system else []
        for u, a in turns:
            messages.append({"role": "user", "content": u})
            if a is not None:
                messages.append({"role": "assistant", "content": a})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids and attention mask; left padding keeps every row's last token aligned."""
        for t in texts:
            if unencodable_at(t) is not None:  # the tokenizer would raise a bare TypeError
                raise GenerationError("The text contains a character that cannot be encoded (an unpaired surrogate, "
                                      "usually from a broken copy and paste); remove it.")
        bos = self.tokenizer.bos_token
        rows = [
            self.tokenizer(t, add_special_tokens=not (bos and t.startswith(bos)))["input_ids"] for t in texts
        ]
        pad = self.pad_token_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, tok.eos_token_id, 0):
            if cand is not None:
                return int(cand)
        return 0

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # --- measurement -----------------------------------------------------------
    def residual_norms(self) -> list[float]:
        """Mean L2 norm of the residual after each block on neutral text, massive activations
        excluded: position 0, and any token over ``model.massive.MASSIVE_FACTOR`` times the layer's
        median norm (some models also park them on the first full stop or line break).

        Many models put huge activations on a few attention-sink tokens; one of them among a hundred
        ordinary tokens would double the mean and make every alpha look small.
        """
        with self._lock:
            if self._norms is None:
                from steering_core.model.massive import massive_threshold
                from steering_core.model.recording import record_residuals

                ids, mask = self.tokenize(list(REFERENCE_TEXTS))
                acts = record_residuals(self, ids, mask, list(range(self.n_layers)))
                keep = mask.bool().clone()
                keep[torch.arange(len(keep)), mask.argmax(-1)] = False  # first real token per row
                norms = [acts[layer][keep].norm(dim=-1) for layer in range(self.n_layers)]
                self._norms = [float(n[n <= massive_threshold(n)].mean()) for n in norms]
        return list(self._norms)

    def describe(self) -> dict[str, Any]:
        """Facts the home page shows."""
        return {
            "model": self.name,
            "source": self.source,
            "backend": self.backend.kind,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "chat template": "yes" if self.chat_template else "no",
        }


def hook_name(layer: int) -> str:
    """TransformerLens name of the residual stream after block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def layer_of_hook(name: str, n_layers: int | None = None) -> int:
    """The block whose *output* a residual hook name refers to.

    ``blocks.l.hook_resid_pre`` is the input of block l, i.e. the output of block l-1.
    """
    m = _HOOK_RE.match(name.strip())
    if not m:
        raise ModelLoadError(
            f"Hook {name!r} is not a residual-stream hook; expected blocks.<l>.hook_resid_post or hook_resid_pre."
        )
    layer = int(m.group(1))
    if m.group(2) in ("resid_pre", "in"):
        layer -= 1
    if layer < 0 or (n_layers is not None and layer >= n_layers):
        raise ModelLoadError(f"Hook {name!r} does not name the output of a block of this model.")
    return layer
