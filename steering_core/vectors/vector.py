"""Steering vectors as first-class saved objects, and reading vector files without unpickling.

Why objects and not bare tensors: a direction is only meaningful together with the block it was
extracted at, the operator it is applied with (plain addition or ACE with its reference point),
and where it came from (method, dataset, model). Passing tensors around loses that, and a vector
applied at the wrong layer or to the wrong model silently does something else. A
:class:`SteeringVector` keeps them together through arithmetic, files and the library.

Layer convention: ``layer`` is the 0-based index of the block whose *output* is steered
(TransformerLens ``blocks.{layer}.hook_resid_post``, HF ``hidden_states[layer + 1]``), the same
convention as :class:`steering_core.model.steering.SteeringTerm`.

Files, and what is never done with them:

* ``.safetensors`` (:func:`to_safetensors_bytes`, :func:`from_safetensors_bytes`): tensor
  ``direction`` (and ``reference`` for ACE) plus string metadata. Bytes that look like a pickle or
  a ``torch.save`` zip archive are refused before any parsing; nothing here ever unpickles.
* GGUF control vectors (:func:`export_gguf`, :func:`import_gguf`), the format repeng writes
  (``ControlVector.export_gguf``) and llama.cpp reads with ``--control-vector``:
  ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (a model type such as
  ``"llama"``), ``controlvector.layer_count``, and one float32 1-D tensor ``direction.{N}`` per
  layer. In llama.cpp, ``common_control_vector_load_one`` (common/common.cpp) stores
  ``direction.N`` for layer N, ``llama_adapter_cvec`` (src/llama-adapter.cpp) adds it with
  ``apply_to(cur, il)``, and every model graph calls ``build_cvec(cur, il)`` at the end of its
  ``for il in 0..n_layer`` loop, right before ``l_out``: so ``direction.N`` is added to the output
  of block N (0-based), exactly our ``layer``. repeng agrees: its layer ``i`` is
  ``model.layers[i]`` and it reads ``hidden_states[i + 1]``. llama.cpp rejects ``direction.0``
  ("there's never a tensor for layer 0"), so the output of block 0 cannot be steered through a
  GGUF file: exporting a layer-0 vector raises :class:`VectorError`. Several tensors for one layer
  are summed by llama.cpp; here they are refused, so a file always means one vector per layer.
  Control vectors are additive, so ACE vectors cannot be exported.
* Uploads of single tensors (``read_vector_bytes``): ``.safetensors``, ``.npy`` with
  ``allow_pickle=False``, and ``.pt``/``.pth`` through ``torch.load(weights_only=True)``.

:class:`VectorStore` keeps saved vectors under ``<root>/vectors/<name>.safetensors`` with one row
each in the ``vectors`` table of ``<root>/library.duckdb`` (other modules own other tables of
that file). A save is all or nothing: if the database write fails, the new file is removed (or the
previous file restored), so no half-saved vector remains.

Every bad input raises :class:`VectorError` (or, from the upload reader, ``VectorFileError``) with
one sentence saying what is wrong.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
import pickle
import re
import struct
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringCoreError, VectorFileError
from steering_core.names import unencodable_at
from steering_core.storage.crashpoints import crash_point

#: Uploads larger than this are refused before parsing.
MAX_VECTOR_FILE_BYTES = 64 * 1024 * 1024


def _pick(tensors: dict[str, torch.Tensor], key: str | None, d_model: int | None) -> torch.Tensor:
    if not tensors:
        raise VectorFileError("The file holds no tensors.")
    if key is not None:
        if key not in tensors:
            raise VectorFileError(f"No tensor named {key!r}; the file has {sorted(tensors)[:10]}.")
        return tensors[key]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    fitting = [k for k, t in tensors.items() if d_model is None or t.shape[-1:] == (d_model,)]
    if len(fitting) == 1:
        return tensors[fitting[0]]
    raise VectorFileError(f"The file holds several tensors {sorted(tensors)[:10]}; name the one to use.")


def read_vector_bytes(
    data: bytes, filename: str, d_model: int | None = None, key: str | None = None
) -> torch.Tensor:
    """Parse an uploaded vector file into a float32 ``[d_model]`` tensor (or ``[n, d_model]``)."""
    if len(data) > MAX_VECTOR_FILE_BYTES:
        raise VectorFileError(f"The file is {len(data) / 1e6:.1f} MB; the limit is {MAX_VECTOR_FILE_BYTES // 2**20} MB.")
    if not data:
        raise VectorFileError("The file is empty.")
    suffix = Path(filename or "").suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load as st_load

            t = _pick(st_load(data), key, d_model)
        elif suffix == ".npy":
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
                raise VectorFileError(f"The .npy array has dtype {getattr(arr, 'dtype', '?')}; a numeric vector is needed.")
            t = torch.from_numpy(np.array(arr, dtype=np.float32))
        elif suffix in (".pt", ".pth"):
            try:
                obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
            except pickle.UnpicklingError as exc:
                if "weights only" not in str(exc).lower():
                    raise
                raise VectorFileError(
                    f"{filename!r} is not a tensor-only .pt file (pickled Python objects, or not PyTorch data "
                    "at all); it was refused unread. Save vectors with safetensors or .npy instead."
                ) from None
            if isinstance(obj, dict):
                obj = _pick({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, key, d_model)
            if not isinstance(obj, torch.Tensor):
                raise VectorFileError("The .pt file does not contain a tensor.")
            t = obj
        else:
            raise VectorFileError(f"Unsupported file type {suffix or '(none)'}; upload .safetensors, .npy or .pt.")
    except VectorFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's fault
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise VectorFileError(f"Could not read {filename!r} as a {suffix} tensor file: {first}") from None
    return check_vector(t, d_model)


def check_vector(t: torch.Tensor, d_model: int | None = None) -> torch.Tensor:
    """A finite real vector (or stack of vectors) of the right length, as float32."""
    if t.is_complex() or t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (
        torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise VectorFileError(f"The tensor has dtype {t.dtype}; a real-valued vector is needed.")
    t = t.detach().float()
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() not in (1, 2) or t.numel() == 0:
        raise VectorFileError(f"Expected a vector, got a tensor of shape {tuple(t.shape)}.")
    if d_model is not None and t.shape[-1] != d_model:
        raise VectorFileError(f"The vector has length {t.shape[-1]}, but the model's d_model is {d_model}.")
    if not torch.isfinite(t).all():
        raise VectorFileError("The vector contains NaN or infinite values.")
    return t.contiguous()


# ==============================================================================================
# Steering vectors as objects
# ==============================================================================================


class VectorError(SteeringCoreError):
    """A steering vector, vector file or saved vector that cannot be used as given."""


#: How a vector is applied: ``add`` puts α·v on the residual stream; ``ace`` (affine concept
#: editing, :class:`steering_core.model.steering.AceTerm`) sets the component along v to the
#: reference point's plus α·|v|.
OPERATORS = ("add", "ace")
#: Longest vector name (names become file names).
MAX_NAME_CHARS = 80
SAFETENSORS_FORMAT = "steering-core-vector"
SAFETENSORS_VERSION = 1
GGUF_ARCH = "controlvector"

_NAME_PUNCT = frozenset(" -_.()")
_PICKLE_REFUSAL = ("This is a Python pickle or a torch.save archive, not a safetensors or GGUF file; pickles are "
                   "never loaded here because unpickling can run arbitrary code. Re-save the vector with safetensors.")


def _clean_name(name: Any, what: str = "vector") -> str:
    """The shared naming rule (:func:`steering_core.names.clean_name`), raised as a VectorError."""
    from steering_core.names import InvalidNameError, clean_name

    try:
        return clean_name(name, what)
    except InvalidNameError as exc:
        raise VectorError(str(exc)) from None


def _safe_stem(stem: str) -> str:
    """A file stem made into a valid name prefix (disallowed characters become '_')."""
    text = "".join(c if (c.isalnum() or c in _NAME_PUNCT) else "_" for c in unicodedata.normalize("NFC", stem))
    while ".." in text:
        text = text.replace("..", ".")
    text = text.strip().lstrip(".").strip()[: MAX_NAME_CHARS - 8].strip()
    try:
        return _clean_name(text)
    except VectorError:
        return "controlvector"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _as_vector_tensor(x: Any, what: str) -> torch.Tensor:
    """A finite float32 ``[d]`` CPU copy of ``x``, or a VectorError saying what is wrong."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise VectorError(f"The {what} has dtype {x.dtype}; steering vectors hold floating-point numbers.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise VectorError(f"The {what} must be a tensor, not {type(x).__name__}.")
    if not x.is_floating_point():
        raise VectorError(f"The {what} has dtype {x.dtype}; steering vectors hold floating-point numbers, "
                          "not integers, booleans or complex values.")
    if x.dim() != 1:
        raise VectorError(f"The {what} has shape {tuple(x.shape)}; a steering vector is one-dimensional, [d_model].")
    if x.numel() == 0:
        raise VectorError(f"The {what} is empty.")
    t = x.detach().to("cpu", torch.float32, copy=True).contiguous()
    if not torch.isfinite(t).all():
        raise VectorError(f"The {what} contains NaN or infinite values.")
    return t


def _as_scalar(x: Any) -> float | None:
    """``x`` as a float when it is a real number (``None`` when it is not one at all)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, torch.Tensor):
        if x.numel() != 1 or not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            return None
        return float(x)
    if isinstance(x, numbers.Real):
        return float(x)
    return None


def _fmt(w: float) -> str:
    return f"{w:g}"


@dataclass(eq=False)
class SteeringVector:
    """A direction together with everything needed to apply it correctly.

    ``layer`` is the 0-based block whose output is steered (``blocks.{layer}.hook_resid_post``);
    ``direction`` a finite float32 ``[d_model]`` tensor; ``operator`` ``"add"`` (α·v is added) or
    ``"ace"`` (affine concept editing, which also needs ``reference``, the point a₀ that α = 0
    restores). ``method``/``dataset``/``model_id`` say where it came from, ``meta`` holds any
    further JSON-serialisable facts. Arithmetic (``a + b``, ``a - b``, ``-a``, ``2 * a``,
    ``a / 2``, :func:`combine`) returns new vectors recording their formula in ``meta``.
    """

    name: str
    layer: int
    direction: torch.Tensor  # [d_model] float32
    method: str = "manual"
    dataset: str = ""
    model_id: str = ""
    created: str = field(default_factory=_now)  # ISO date-time, UTC
    meta: dict = field(default_factory=dict)
    operator: str = "add"  # or "ace"
    reference: torch.Tensor | None = None  # ACE reference point a0 [d_model]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise VectorError("A steering vector needs a name (non-empty text).")
        for attr in ("method", "dataset", "model_id", "created"):  # (the name is checked when saved)
            if not isinstance(getattr(self, attr), str):
                raise VectorError(f"{attr} must be text, not {type(getattr(self, attr)).__name__}.")
            _check_encodable(getattr(self, attr), attr)
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)):
            raise VectorError(f"layer must be a whole number (the block whose output is steered), not {self.layer!r}.")
        if self.layer < 0:
            raise VectorError(f"layer must be 0 or more (blocks are counted from 0), not {self.layer}.")
        self.layer = int(self.layer)
        if self.operator not in OPERATORS:
            raise VectorError(f"Unknown operator {self.operator!r}; known operators are {', '.join(OPERATORS)}.")
        self.direction = _as_vector_tensor(self.direction, "direction")
        if self.operator == "ace":
            if self.reference is None:
                raise VectorError("An ACE vector needs its reference point a0 (the activation level that alpha = 0 restores).")
            self.reference = _as_vector_tensor(self.reference, "ACE reference")
            if self.reference.shape != self.direction.shape:
                raise VectorError(f"The ACE reference has length {self.reference.shape[0]}, but the direction has length "
                                  f"{self.direction.shape[0]}; both must be [d_model].")
            if float(self.direction.abs().max()) == 0.0:
                raise VectorError("An ACE vector needs a non-zero direction.")
        elif self.reference is not None:
            raise VectorError("Only ACE vectors have a reference point; this vector's operator is 'add'.")
        if not isinstance(self.meta, dict):
            raise VectorError(f"meta must be a dict, not {type(self.meta).__name__}.")
        try:
            text = json.dumps(self.meta, allow_nan=False)
            self.meta = json.loads(text)  # a private, JSON-exact copy
        except (TypeError, ValueError) as exc:
            raise VectorError(f"meta must hold only JSON values (text, finite numbers, lists, dicts): {_first_line(exc)}.") from None
        except RecursionError:
            raise VectorError("meta is nested too deeply to be saved.") from None
        _check_encodable(json.dumps(self.meta, ensure_ascii=False), "meta")

    # -- views -----------------------------------------------------------------------------------
    @property
    def norm(self) -> float:
        """Euclidean length of the direction (computed in float64, so it cannot overflow)."""
        return float(torch.linalg.vector_norm(self.direction.double()))

    @property
    def d_model(self) -> int:
        return int(self.direction.shape[0])

    def unit(self) -> torch.Tensor:
        """The direction scaled to length 1 (a new float32 tensor)."""
        n = self.norm
        if n == 0.0:
            raise VectorError(f"{self.name!r} is all zeros, so it has no direction to normalise.")
        return (self.direction.double() / n).float()

    def term(self, model, alpha=1.0, **extra):
        """A validated steering term for ``model`` (:func:`steering_core.model.steering.make_term`, or
        :func:`~steering_core.model.steering.ace_term` for ACE vectors; ``extra`` goes to ``ace_term``)."""
        from steering_core.model.steering import ace_term, make_term

        if self.operator == "ace":
            return ace_term(model, self.layer, self.direction, self.reference, alpha, **extra)
        return make_term(model, self.layer, self.direction, alpha)

    def __repr__(self) -> str:
        return (f"SteeringVector(name={self.name!r}, layer={self.layer}, d_model={self.d_model}, norm={self.norm:.4g}, "
                f"method={self.method!r}, operator={self.operator!r})")

    # -- arithmetic ------------------------------------------------------------------------------
    def __add__(self, other: Any) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return _linear([(self, 1.0), (other, 1.0)], f"{self.name} plus {other.name}",
                       f"{_operand(self)} + {_operand(other)}")

    def __sub__(self, other: Any) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return _linear([(self, 1.0), (other, -1.0)], f"{self.name} minus {other.name}",
                       f"{_operand(self)} - {_operand(other)}")

    def __neg__(self) -> "SteeringVector":
        return _linear([(self, -1.0)], f"minus {self.name}", f"-{_operand(self)}")

    def __mul__(self, k: Any) -> "SteeringVector":
        s = _as_scalar(k)
        if s is None:
            return NotImplemented
        return _linear([(self, s)], f"{_fmt(s)} x {self.name}", f"{_fmt(s)} * {_operand(self)}")

    __rmul__ = __mul__

    def __truediv__(self, k: Any) -> "SteeringVector":
        s = _as_scalar(k)
        if s is None:
            return NotImplemented
        if s == 0.0:
            raise VectorError(f"Cannot divide {self.name!r} by zero.")
        return _linear([(self, s)], f"{self.name} over {_fmt(s)}", f"{_operand(self)} / {_fmt(s)}", divide=True)


def _operand(v: SteeringVector) -> str:
    formula = v.meta.get("formula") if v.method == "arithmetic" else None
    return f"({formula})" if isinstance(formula, str) and formula else v.name


def _fit_name(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS].rstrip()


def _linear(terms: Sequence[tuple[Any, Any]], name: str, formula: str, divide: bool = False) -> SteeringVector:
    """Σ wᵢ·vᵢ (or v / w when ``divide``) as a new vector, after checking the vectors can be mixed."""
    if not terms:
        raise VectorError("Nothing to combine: give at least one (vector, weight) pair.")
    vecs: list[SteeringVector] = []
    weights: list[float] = []
    for item in terms:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise VectorError(f"combine() takes (vector, weight) pairs, not {item!r}.")
        v, w = item
        if not isinstance(v, SteeringVector):
            raise VectorError(f"combine() needs SteeringVector objects, not {type(v).__name__}.")
        s = _as_scalar(w)
        if s is None or not math.isfinite(s):
            raise VectorError(f"The weight for {v.name!r} must be a finite number, not {w!r}.")
        if v.operator != "add":
            raise VectorError(f"{v.name!r} is an ACE vector and cannot be used in arithmetic: ACE sets the component "
                              "along its direction to a reference level instead of adding, so sums and multiples "
                              "of ACE vectors have no meaning.")
        vecs.append(v)
        weights.append(s)
    first = vecs[0]
    for v in vecs[1:]:
        if v.layer != first.layer:
            raise VectorError(f"Cannot combine {first.name!r} (layer {first.layer}) with {v.name!r} (layer {v.layer}): "
                              "vectors steering different blocks' outputs have no common layer.")
        if v.d_model != first.d_model:
            raise VectorError(f"Cannot combine {first.name!r} (length {first.d_model}) with {v.name!r} "
                              f"(length {v.d_model}): they come from models of different widths.")
    if divide:
        acc = vecs[0].direction.double() / weights[0]
        weights = [1.0 / weights[0]]
    else:
        acc = torch.zeros(first.d_model, dtype=torch.float64)
        for v, w in zip(vecs, weights):
            acc = acc + w * v.direction.double()
    direction = acc.float()
    if not torch.isfinite(direction).all():
        raise VectorError(f"{formula} overflows float32 (values beyond ±3.4e38).")
    model_ids = {v.model_id for v in vecs}
    datasets = {v.dataset for v in vecs}
    return SteeringVector(
        name=_fit_name(name), layer=first.layer, direction=direction, method="arithmetic",
        dataset=datasets.pop() if len(datasets) == 1 else "",
        model_id=model_ids.pop() if len(model_ids) == 1 else "",
        meta={"formula": formula,
              "terms": [{"name": v.name, "weight": w, "method": v.method, "created": v.created}
                        for v, w in zip(vecs, weights)]},
    )


def combine(terms: Iterable[tuple[SteeringVector, float]], name: str | None = None) -> SteeringVector:
    """Weighted sum Σ wᵢ·vᵢ of same-layer, same-width additive vectors, e.g.
    ``combine([(happy, 1.0), (calm, 0.5)], "happy and calm")``. ``meta`` records the formula."""
    terms = list(terms)
    parts = []
    for item in terms:
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], SteeringVector):
            s = _as_scalar(item[1])
            parts.append((item[0], s if s is not None else float("nan")))
    auto = " plus ".join(f"{_fmt(w)} x {v.name}" for v, w in parts)
    formula = " + ".join(f"{_fmt(w)} * {_operand(v)}" for v, w in parts)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise VectorError("The combined vector's name must be non-empty text.")
    return _linear(terms, name.strip() if name is not None else auto, formula)


# ----------------------------------------------------------------------------------------------
# safetensors files
# ----------------------------------------------------------------------------------------------


def _check_size(n: int, what: str) -> None:
    limit = MAX_VECTOR_FILE_BYTES
    if n > limit:
        raise VectorError(f"The {what} has {n:,} bytes; the limit is {limit:,} bytes ({limit / 2**20:.1f} MiB).")


def _check_encodable(text: str, what: str) -> None:
    """Text that cannot be written as UTF-8 (a lone surrogate, e.g. from a broken copy-paste)
    would fail half-way through a save; refuse it up front."""
    at = unencodable_at(text)
    if at is not None:
        raise VectorError(f"The vector's {what} holds a character that cannot be stored as UTF-8 "
                          f"(position {at}: {text[at]!r}).")


def _refuse_pickle(head: bytes) -> None:
    # Pickle protocol 2+ starts with PROTO (0x80); legacy torch.save starts with a pickled magic
    # number (also 0x80); torch.save's default zip archive starts with a local-file header.
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise VectorError(_PICKLE_REFUSAL)


def to_safetensors_bytes(vec: SteeringVector) -> bytes:
    """The vector as a ``.safetensors`` file: tensors ``direction`` (and ``reference`` for ACE),
    metadata ``name``, ``layer``, ``method``, ``dataset``, ``model_id``, ``created``,
    ``operator`` and ``meta`` (JSON), all strings."""
    from safetensors.torch import save as st_save

    if not isinstance(vec, SteeringVector):
        raise VectorError(f"Expected a SteeringVector, not {type(vec).__name__}.")
    tensors = {"direction": vec.direction.contiguous()}
    if vec.reference is not None:
        tensors["reference"] = vec.reference.contiguous()
    metadata = {
        "format": SAFETENSORS_FORMAT, "version": str(SAFETENSORS_VERSION), "name": vec.name,
        "layer": str(vec.layer), "method": vec.method, "dataset": vec.dataset, "model_id": vec.model_id,
        "created": vec.created, "operator": vec.operator,
        "meta": json.dumps(vec.meta, ensure_ascii=False, allow_nan=False),
    }
    return st_save(tensors, metadata=metadata)


def _looks_like_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object: never a
    pickle (whose second byte is a protocol number, not part of a length followed by '{')."""
    if len(data) < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return 2 <= n <= len(data) - 8 and data[8:9] == b"{"


def _safetensors_header(data: bytes) -> dict:
    """The JSON header of a safetensors file, checked before the tensors are parsed."""
    not_st = "This is not a safetensors file (its header is missing or malformed)."
    if len(data) < 10:
        raise VectorError(not_st)
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > len(data) - 8 or data[8:9] != b"{":
        raise VectorError(not_st)
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise VectorError(not_st) from None
    if not isinstance(header, dict):
        raise VectorError(not_st)
    return header


def _file_tensor(t: torch.Tensor, key: str) -> torch.Tensor:
    if t.dtype == torch.bool or t.is_complex() or not t.is_floating_point():
        raise VectorError(f"Tensor {key!r} has dtype {t.dtype}; only floating-point vectors are accepted "
                          "(integer and boolean tensors are not steering vectors).")
    if t.dim() != 1:
        hint = " (a matrix: perhaps one vector per row or per layer)" if t.dim() == 2 else ""
        raise VectorError(f"Tensor {key!r} has shape {tuple(t.shape)}{hint}; a steering vector is one-dimensional, [d_model].")
    return t


def from_safetensors_bytes(data: bytes, name: str | None = None, layer: int | None = None) -> SteeringVector:
    """Read a vector written by :func:`to_safetensors_bytes`, or a plain safetensors file with a
    ``direction`` tensor or exactly one 1-D tensor. ``layer`` (required when the file has no
    ``layer`` metadata) and ``name`` override the file's. Pickles are refused unread; float16,
    bfloat16 and float64 become float32; integer, boolean, 2-D and non-finite tensors are refused."""
    from safetensors.torch import load as st_load

    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise VectorError(f"Pass the file's contents as bytes, not {type(data).__name__}.")
    _check_size(len(data), "vector file")
    if not data:
        raise VectorError("The vector file is empty.")
    if not _looks_like_safetensors(data):  # a header length of 128 mod 256 also starts with 0x80
        _refuse_pickle(data[:4])
    header = _safetensors_header(data)
    try:
        tensors = st_load(data)
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's fault
        raise VectorError(f"The file is not a readable safetensors file ({_first_line(exc)}).") from None
    md = header.get("__metadata__") or {}
    if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
        raise VectorError("The file's safetensors metadata is malformed (its values must be text).")
    if md.get("format") == SAFETENSORS_FORMAT:
        version = md.get("version", "1")
        if not re.fullmatch(r"[0-9]+", version) or int(version) > SAFETENSORS_VERSION:
            raise VectorError(f"The vector file has format version {version!r}, newer than this app reads "
                              f"(version {SAFETENSORS_VERSION}).")
    if not tensors:
        raise VectorError("The file holds no tensors.")
    if "direction" in tensors:
        key = "direction"
    else:
        ones = [k for k, t in tensors.items() if t.dim() == 1 and k != "reference"]
        if len(ones) == 1:
            key = ones[0]
        elif len(tensors) == 1:
            key = next(iter(tensors))
        else:
            raise VectorError(f"The file has no 'direction' tensor and {len(ones)} one-dimensional tensors among "
                              f"{sorted(tensors)[:10]}; cannot tell which is the vector.")
    direction = _file_tensor(tensors[key], key)
    operator = md.get("operator", "add") or "add"
    reference = None
    if operator == "ace":
        if "reference" not in tensors:
            raise VectorError("The file says the vector is ACE but has no 'reference' tensor (the point a0 it needs).")
        reference = _file_tensor(tensors["reference"], "reference")
    if layer is None:
        raw = md.get("layer")
        if raw is None:
            raise VectorError("The file does not say which layer the vector steers (no 'layer' metadata); "
                              "pass layer= to import it.")
        if not re.fullmatch(r"[0-9]+", raw.strip()):
            raise VectorError(f"The file's layer metadata {raw!r} is not a whole number of 0 or more.")
        layer = int(raw.strip())
    try:
        meta = json.loads(md.get("meta", "{}") or "{}")
    except (json.JSONDecodeError, RecursionError):
        raise VectorError("The file's 'meta' metadata is not valid JSON.") from None
    if not isinstance(meta, dict):
        raise VectorError("The file's 'meta' metadata must be a JSON object.")
    if name is not None:
        name = _clean_name(name)
    else:
        try:
            name = _clean_name(md.get("name", ""))
        except VectorError:
            name = "vector"
    return SteeringVector(
        name=name, layer=layer, direction=direction, method=md.get("method", "") or "imported",
        dataset=md.get("dataset", ""), model_id=md.get("model_id", ""), created=md.get("created", "") or _now(),
        meta=meta, operator=operator, reference=reference,
    )


# ----------------------------------------------------------------------------------------------
# GGUF control vectors (repeng / llama.cpp --control-vector)
# ----------------------------------------------------------------------------------------------


def _atomic_target(path: Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise VectorError(f"{path} is a folder; give a file name such as {path / 'vector.gguf'}.")
    if not path.parent.is_dir():
        raise VectorError(f"The folder {path.parent} does not exist.")
    return path


def export_gguf(vectors: "list[SteeringVector] | SteeringVector", path: str | os.PathLike, model_hint: str) -> Path:
    """Write a llama.cpp control-vector file: one float32 tensor ``direction.{layer}`` per
    vector, ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (a model
    type such as ``"llama"``; llama.cpp does not check it) and ``controlvector.layer_count``
    (number of tensors, as repeng writes it). Layer 0, ACE vectors, two vectors on one layer and
    mixed widths are refused. Written to a temporary file and moved into place."""
    import gguf

    vecs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not vecs:
        raise VectorError("Nothing to export: give at least one vector.")
    by_layer: dict[int, SteeringVector] = {}
    for v in vecs:
        if not isinstance(v, SteeringVector):
            raise VectorError(f"export_gguf needs SteeringVector objects, not {type(v).__name__}.")
        if v.operator != "add":
            raise VectorError(f"{v.name!r} is an ACE vector; GGUF control vectors can only be added to the residual "
                              "stream, so it cannot be exported.")
        if v.layer == 0:
            raise VectorError(f"{v.name!r} steers the output of block 0, which a GGUF control vector cannot express "
                              "(llama.cpp rejects direction.0); use layer 1 or later.")
        if v.layer in by_layer:
            raise VectorError(f"{by_layer[v.layer].name!r} and {v.name!r} are both on layer {v.layer}; a control-vector "
                              "file holds one direction per layer, so combine them first.")
        if v.d_model != vecs[0].d_model:
            raise VectorError(f"{vecs[0].name!r} has length {vecs[0].d_model} but {v.name!r} has {v.d_model}; "
                              "one file serves one model width.")
        by_layer[v.layer] = v
    if not isinstance(model_hint, str):
        raise VectorError(f"model_hint must be text (a model type such as 'llama'), not {type(model_hint).__name__}.")
    path = _atomic_target(Path(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", model_hint.strip())
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(by_layer))
        for layer in sorted(by_layer):
            writer.add_tensor(f"direction.{layer}", by_layer[layer].direction.numpy().astype(np.float32, copy=True))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise VectorError(f"Could not write {path} ({exc.strerror or _first_line(exc)}).") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def gguf_bytes(vectors: "list[SteeringVector] | SteeringVector", model_hint: str) -> bytes:
    """:func:`export_gguf` into memory, for a download button."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = export_gguf(vectors, Path(d) / "control_vector.gguf", model_hint)
        return Path(path).read_bytes()


def _gguf_text(reader, key: str) -> str | None:
    f = reader.get_field(key)
    if f is None:
        return None
    try:
        value = f.contents()
    except Exception:  # noqa: BLE001
        return None
    return value if isinstance(value, str) else None


def import_gguf(path_or_bytes: "str | os.PathLike | bytes", name: str | None = None) -> list[SteeringVector]:
    """Read a GGUF control-vector file (repeng, llama.cpp) into one vector per layer, sorted by
    layer and named ``<stem>.L<layer>`` (``name`` replaces the file's stem). ``direction.N`` is
    the output of block N, our ``layer`` N. Refuses files that are not control vectors, tensors
    other than float32 1-D ``direction.N``, mixed widths, two tensors for one layer and NaN/inf."""
    import gguf

    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        _check_size(len(data), "GGUF file")
        label, stem, src, from_path = "The GGUF file", "controlvector", None, False
        head = data[:4]
    else:
        src = Path(path_or_bytes).expanduser()
        if not src.is_file():
            raise VectorError(f"No file at {src}.")
        _check_size(src.stat().st_size, "GGUF file")
        with open(src, "rb") as fh:
            head = fh.read(4)
        label, stem, data, from_path = str(src.name), src.stem, None, True
    _refuse_pickle(head)
    if head != b"GGUF":
        raise VectorError(f"{label} is not a GGUF file (it does not start with 'GGUF').")
    prefix = _clean_name(name) if name is not None else _safe_stem(stem)
    if len(prefix) > MAX_NAME_CHARS - 8:
        prefix = prefix[: MAX_NAME_CHARS - 8].rstrip()
    tmp = None
    try:
        if data is not None:
            fd, tmp = tempfile.mkstemp(suffix=".gguf")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            src = Path(tmp)
        try:
            reader = gguf.GGUFReader(src)
        except Exception as exc:  # noqa: BLE001 - any parser failure is the file's fault
            raise VectorError(f"{label} is not a readable GGUF file ({_first_line(exc)}).") from None
        arch = _gguf_text(reader, "general.architecture")
        if arch != GGUF_ARCH:
            raise VectorError(f"{label} is a GGUF file for {arch!r}, not a control vector (general.architecture must be "
                              f"'{GGUF_ARCH}').")
        hint = _gguf_text(reader, f"{GGUF_ARCH}.model_hint") or ""
        directions: dict[int, np.ndarray] = {}
        for t in reader.tensors:
            m = re.fullmatch(r"direction\.(\d+)", t.name)
            if not m:
                raise VectorError(f"{label} has a tensor named {t.name!r}; control-vector files hold only direction.<layer> tensors.")
            layer = int(m.group(1))
            if layer in directions:
                raise VectorError(f"{label} has two tensors for layer {layer}; expected one direction per layer.")
            if t.tensor_type != gguf.GGMLQuantizationType.F32:
                raise VectorError(f"{t.name} in {label} is stored as {t.tensor_type.name}; control vectors are float32 "
                                  "(llama.cpp refuses other types too).")
            dims = [int(d) for d in t.shape]
            while len(dims) > 1 and dims[-1] == 1:
                dims.pop()
            if len(dims) != 1:
                raise VectorError(f"{t.name} in {label} has shape {tuple(dims)}; a control vector is one-dimensional.")
            directions[layer] = np.array(t.data, dtype=np.float32, copy=True).reshape(-1)
        reader = None  # release the memory map before the temporary file goes
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if not directions:
        raise VectorError(f"{label} holds no direction tensors.")
    widths = {a.shape[0] for a in directions.values()}
    if len(widths) > 1:
        raise VectorError(f"{label} mixes direction lengths {sorted(widths)}; one file serves one model width.")
    out = []
    for layer in sorted(directions):
        try:
            out.append(SteeringVector(
                name=f"{prefix}.L{layer}", layer=layer, direction=torch.from_numpy(directions[layer]), method="gguf",
                meta={"source": "gguf", "model_hint": hint, "file": label if from_path else ""},
            ))
        except VectorError as exc:
            raise VectorError(f"direction.{layer} in {label}: {exc}") from None
    return out


# ----------------------------------------------------------------------------------------------
# The vector library
# ----------------------------------------------------------------------------------------------

_VECTORS_TABLE = """CREATE TABLE IF NOT EXISTS vectors (
    name TEXT PRIMARY KEY, method TEXT, layer INTEGER, dataset TEXT, model_id TEXT, norm DOUBLE,
    d_model INTEGER, operator TEXT, created TEXT, meta TEXT, file TEXT)"""


class VectorStore:
    """Saved vectors: tensors in ``<root>/vectors/<name>.<version>.safetensors``, one row each in
    the ``vectors`` table of ``<root>/library.duckdb`` (``root`` defaults to ``cache_dir()``).

    Crash safety: each save writes a new file, then commits the row that points at it, then
    removes the file it replaced. A ``kill -9`` anywhere in between leaves the old vector whole
    (row and file) or the new one; the only leftover is a file no row points at, which the next
    open removes. The row is the truth; a file is never overwritten in place.

    DuckDB lets a process open a file once, so a caller holding a connection to
    ``library.duckdb`` (the dataset store shares it) passes it as ``con``, with the lock that
    guards it as ``lock``; the store then never closes it. Only the ``vectors`` table is touched.
    Thread-safe: every method holds the lock around database and file work.
    """

    def __init__(self, root: str | os.PathLike | None = None, con=None, lock=None):
        from steering_core.model.loading import cache_dir
        from steering_core.storage.db import connect, transaction

        self._transaction = transaction
        self.root = Path(root).expanduser() if root is not None else cache_dir()
        self.folder = self.root / "vectors"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VectorError(f"Cannot create the vector folder {self.folder} ({exc.strerror}).") from None
        self._lock = lock if lock is not None else threading.RLock()
        self._owns_con = con is None
        self.con = con if con is not None else connect(self.root / "library.duckdb")
        try:
            with self._lock, transaction(self.con):
                self.con.execute(_VECTORS_TABLE)
            self._remove_orphans()
        except BaseException:
            if self._owns_con:
                self.con.close()
            raise

    def _remove_orphans(self) -> None:
        """Delete what an interrupted save or delete left behind: temporary files and files no
        row points at. Only on open, when this process holds the library file (DuckDB's lock)."""
        with self._lock:
            kept = {r[0] for r in self.con.execute("SELECT file FROM vectors").fetchall()}
            for p in self.folder.iterdir():
                stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
                if p.is_file() and (stale_tmp or (p.suffix == ".safetensors" and p.name not in kept)):
                    with contextlib.suppress(OSError):
                        p.unlink()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection if this store opened it (a shared one stays open)."""
        with self._lock:
            if self._owns_con:
                self.con.close()

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------------------
    def _path(self, file: str) -> Path:
        p = self.folder / file
        if p.parent != self.folder:  # cannot happen for a cleaned name; kept as a last guard
            raise VectorError(f"The file name {file!r} would leave the vector folder.")
        return p

    def _file_of(self, name: str) -> str | None:
        row = self.con.execute("SELECT file FROM vectors WHERE name = ?", [name]).fetchone()
        return None if row is None else row[0]

    def names(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.con.execute("SELECT name FROM vectors ORDER BY name").fetchall()]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._lock:
            return self.con.execute("SELECT count(*) FROM vectors WHERE name = ?", [name.strip()]).fetchone()[0] > 0

    def __len__(self) -> int:
        with self._lock:
            return int(self.con.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def summaries(self) -> list[dict[str, Any]]:
        """One dict per saved vector, for a table: name, method, layer, dataset, norm, created,
        plus operator, d_model and model_id."""
        with self._lock:
            rows = self.con.execute("SELECT name, method, layer, dataset, norm, created, operator, d_model, model_id "
                                    "FROM vectors ORDER BY name").fetchall()
        keys = ("name", "method", "layer", "dataset", "norm", "created", "operator", "d_model", "model_id")
        return [dict(zip(keys, r)) for r in rows]

    def load(self, name: str) -> SteeringVector:
        """The saved vector (its file is authoritative for the tensor and metadata)."""
        name = _clean_name(name)
        with self._lock:
            file = self._file_of(name)
            if file is None:
                raise VectorError(f"No saved vector named {name!r}.")
            try:
                data = self._path(file).read_bytes()
            except FileNotFoundError:
                raise VectorError(f"The file of saved vector {name!r} is missing from {self.folder}; delete the "
                                  "entry and save the vector again.") from None
            except OSError as exc:
                raise VectorError(f"Cannot read the file of saved vector {name!r} ({exc.strerror}).") from None
        return from_safetensors_bytes(data, name=name)

    # -- writes ----------------------------------------------------------------------------------
    def _insert(self, vec: SteeringVector, file: str) -> None:
        self.con.execute(
            "INSERT INTO vectors (name, method, layer, dataset, model_id, norm, d_model, operator, created, meta, file) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [vec.name, vec.method, vec.layer, vec.dataset, vec.model_id, vec.norm, vec.d_model, vec.operator,
             vec.created, json.dumps(vec.meta, ensure_ascii=False), file])

    def _write_file(self, path: Path, data: bytes) -> None:
        """Atomically put ``data`` at ``path`` (temporary file in the same folder, then os.replace)."""
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def save(self, vec: SteeringVector, overwrite: bool = False) -> str:
        """Save under ``vec.name`` (cleaned; returned). An existing name is refused unless
        ``overwrite``. All or nothing: when the database write fails, the new file is removed or
        the previous one put back, and the error is raised."""
        if not isinstance(vec, SteeringVector):
            raise VectorError(f"Only SteeringVector objects can be saved, not {type(vec).__name__}.")
        name = _clean_name(vec.name)
        if name != vec.name:
            import dataclasses

            vec = dataclasses.replace(vec, name=name)
        data = to_safetensors_bytes(vec)
        _check_size(len(data), "vector file")
        path = self._path(f"{name}.{os.urandom(4).hex()}.safetensors")
        with self._lock:
            rows = [r[0] for r in self.con.execute("SELECT name FROM vectors WHERE lower(name) = lower(?)", [name]).fetchall()]
            clash = [r for r in rows if r != name]
            if clash:
                raise VectorError(f"A vector named {clash[0]!r} already exists; names differing only in capitals would "
                                  "share one file on some systems, so choose another name.")
            if rows and not overwrite:
                raise VectorError(f"A vector named {name!r} already exists; delete it first or save with overwrite=True.")
            old_file = self._file_of(name)
            try:
                self._write_file(path, data)
            except OSError as exc:
                raise VectorError(f"Could not write {path} ({exc.strerror or _first_line(exc)}); nothing was saved.") from None
            crash_point("vector_save:file_written")
            try:
                with self._transaction(self.con):
                    self.con.execute("DELETE FROM vectors WHERE name = ?", [name])
                    self._insert(vec, path.name)
                    crash_point("vector_save:before_commit")
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)  # the old row and file are untouched
                if isinstance(exc, SteeringCoreError) or not isinstance(exc, Exception):
                    raise
                raise VectorError(f"Could not record {name!r} in the vector library ({_first_line(exc)}); "
                                  "nothing was saved.") from exc
            crash_point("vector_save:committed")
            if old_file is not None and old_file != path.name:
                with contextlib.suppress(OSError):
                    self._path(old_file).unlink(missing_ok=True)
        return name

    def delete(self, name: str) -> None:
        """Remove a saved vector: its row first (one transaction), then its file."""
        name = _clean_name(name)
        with self._lock:
            file = self._file_of(name)
            if file is None:
                raise VectorError(f"No saved vector named {name!r}.")
            with self._transaction(self.con):
                self.con.execute("DELETE FROM vectors WHERE name = ?", [name])
            crash_point("vector_delete:committed")
            with contextlib.suppress(OSError):
                self._path(file).unlink(missing_ok=True)


__all__ = ["MAX_VECTOR_FILE_BYTES", "OPERATORS", "SteeringVector", "VectorError", "VectorStore", "check_vector",
           "combine", "export_gguf", "from_safetensors_bytes", "import_gguf", "read_vector_bytes",
           "to_safetensors_bytes"]
