"""Steering vectors as ``.safetensors`` files: the library's own format, and plain tensor files.

A vector file holds the tensor ``direction`` (plus ``reference`` for operators that need one,
such as ACE) and string metadata: ``format``, ``version``, ``name``, ``layer``, ``method``,
``dataset``, ``model_id``, ``created``, ``operator`` (a name in
:mod:`steering_core.model.operators`) and ``meta`` (JSON). Reading also accepts a plain
safetensors file with a ``direction`` tensor or exactly one 1-D tensor.

A trained adaptor that is not one vector (LoReFT, LoReST: :mod:`steering_core.vectors.trained`)
also writes its parameters as tensors ``adaptor.<name>`` (``adaptor.R``, ``adaptor.W``, ...) and
metadata ``adaptor``, JSON ``{"kind": ..., "config": {...}}`` (how it was trained). Its operator
name is a hash of those parameters; reading checks the hash and binds the operator again, so the
vector steers in a fresh process.

Files come from outside, so bytes that look like a pickle or a ``torch.save`` zip archive are
refused before any parsing (:func:`steering_core.vectors.uploads.refuse_pickle`); nothing here
ever unpickles.
"""

from __future__ import annotations

import json
import re
import struct

import torch

from steering_core.errors import VectorError
from steering_core.vectors.uploads import check_file_size, first_line, refuse_pickle
from steering_core.vectors.vector import SteeringVector, clean_vector_name, vector_operator

SAFETENSORS_FORMAT = "steering-core-vector"
SAFETENSORS_VERSION = 1


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
    adaptor = _adaptor_to_write(vec)
    metadata = {
        "format": SAFETENSORS_FORMAT, "version": str(SAFETENSORS_VERSION), "name": vec.name,
        "layer": str(vec.layer), "method": vec.method, "dataset": vec.dataset, "model_id": vec.model_id,
        "created": vec.created, "operator": vec.operator,
        "meta": json.dumps(vec.meta, ensure_ascii=False, allow_nan=False),
    }
    if adaptor is not None:
        tensors.update({f"{ADAPTOR_PREFIX}{k}": t.contiguous() for k, t in adaptor.params.items()})
        metadata["adaptor"] = json.dumps({"kind": adaptor.kind, "config": adaptor.config}, allow_nan=False)
    return st_save(tensors, metadata=metadata)


ADAPTOR_PREFIX = "adaptor."


def _claims_adaptor(operator: str) -> bool:
    from steering_core.vectors.trained.adaptor import looks_like_adaptor

    return looks_like_adaptor(operator) is not None


def _adaptor_to_write(vec: SteeringVector):
    """The adaptor bound to the vector's operator, or None for an ordinary operator."""
    from steering_core.vectors.trained.adaptor import bound_adaptor

    adaptor = bound_adaptor(vec.operator)
    if adaptor is not None and adaptor.d_model != vec.d_model:
        raise VectorError(f"{vec.name!r}: its {adaptor.label} has d_model {adaptor.d_model} but its direction has "
                          f"length {vec.d_model}.")
    return adaptor


def _bind_file_adaptor(tensors: dict, md: dict, operator: str) -> None:
    """Rebuild and bind the adaptor a file carries, so its operator name means its parameters."""
    from steering_core.errors import SteeringCoreError
    from steering_core.vectors.trained.adaptor import Adaptor, looks_like_adaptor

    try:
        spec = json.loads(md.get("adaptor") or "{}")
    except (json.JSONDecodeError, RecursionError):
        raise VectorError("The file's 'adaptor' metadata is not valid JSON.") from None
    if not isinstance(spec, dict):
        raise VectorError("The file's 'adaptor' metadata must be a JSON object.")
    kind = spec.get("kind") or looks_like_adaptor(operator)
    params = {k[len(ADAPTOR_PREFIX):]: t for k, t in tensors.items() if k.startswith(ADAPTOR_PREFIX)}
    if not params:
        raise VectorError(f"The file says the vector is a trained {kind} adaptor (operator {operator!r}) but holds none "
                          "of its parameters, so it cannot steer.")
    try:
        adaptor = Adaptor(str(kind), params, spec.get("config") or {})
    except SteeringCoreError as exc:
        raise VectorError(f"The file's adaptor cannot be used: {first_line(exc)}") from None
    if adaptor.operator != operator:
        raise VectorError(f"The file's adaptor parameters do not match its operator name {operator!r}: the file was "
                          "changed after it was saved.")
    adaptor.bind()


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
    check_file_size(len(data), "vector file")
    if not data:
        raise VectorError("The vector file is empty.")
    if not _looks_like_safetensors(data):  # a header length of 128 mod 256 also starts with 0x80
        refuse_pickle(data[:4])
    header = _safetensors_header(data)
    try:
        tensors = st_load(data)
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's fault
        raise VectorError(f"The file is not a readable safetensors file ({first_line(exc)}).") from None
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
    if "adaptor" in md or _claims_adaptor(operator):
        _bind_file_adaptor(tensors, md, operator)
    op = vector_operator(operator)
    reference = None
    if op.needs_reference:
        if "reference" not in tensors:
            raise VectorError(f"The file says the vector is {op.label} but has no 'reference' tensor (the point a0 "
                              "it needs).")
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
        name = clean_vector_name(name)
    else:
        try:
            name = clean_vector_name(md.get("name", ""))
        except VectorError:
            name = "vector"
    when = {"created": md["created"]} if md.get("created") else {}  # else: now
    return SteeringVector(
        name=name, layer=layer, direction=direction, method=md.get("method", "") or "imported",
        dataset=md.get("dataset", ""), model_id=md.get("model_id", ""), meta=meta, operator=operator,
        reference=reference, **when,
    )


__all__ = ["ADAPTOR_PREFIX", "SAFETENSORS_FORMAT", "SAFETENSORS_VERSION", "from_safetensors_bytes", "to_safetensors_bytes"]
