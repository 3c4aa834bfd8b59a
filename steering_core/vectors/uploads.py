"""Vector files handed to us by a person: read them without ever unpickling, within a size limit.

Every vector file this package reads comes from outside (an upload, a download, a file someone
sent), so the checks that keep that safe live here and every reader uses them: the size limit
(checked before parsing), the refusal of pickles and ``torch.save`` archives (checked on the
first bytes, before any parser runs) and one-line error messages from parser failures.

Uploads of single tensors (:func:`read_vector_bytes`), as the Steer page takes them:
``.safetensors``, ``.npy`` with ``allow_pickle=False``, and ``.pt``/``.pth`` through
``torch.load(weights_only=True)``. Saved :class:`~steering_core.vectors.vector.SteeringVector`
files have their own readers (:mod:`~steering_core.vectors.safetensors_format`,
:mod:`~steering_core.vectors.gguf_format`).
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from steering_core.errors import VectorError, VectorFileError

#: Uploads and vector files larger than this are refused before parsing.
MAX_VECTOR_FILE_BYTES = 64 * 1024 * 1024

PICKLE_REFUSAL = ("This is a Python pickle or a torch.save archive, not a safetensors or GGUF file; pickles are "
                  "never loaded here because unpickling can run arbitrary code. Re-save the vector with safetensors.")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (colour codes removed, at most 200 characters):
    what a parser said, short enough for a one-sentence error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def check_file_size(n: int, what: str) -> None:
    """Refuse a file of ``n`` bytes above :data:`MAX_VECTOR_FILE_BYTES` (read at call time, so a
    test can lower it), before anything parses it."""
    limit = MAX_VECTOR_FILE_BYTES
    if n > limit:
        raise VectorError(f"The {what} has {n:,} bytes; the limit is {limit:,} bytes ({limit / 2**20:.1f} MiB).")


def refuse_pickle(head: bytes) -> None:
    """Refuse bytes that start like a pickle or a ``torch.save`` archive, unread."""
    # Pickle protocol 2+ starts with PROTO (0x80); legacy torch.save starts with a pickled magic
    # number (also 0x80); torch.save's default zip archive starts with a local-file header.
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise VectorError(PICKLE_REFUSAL)


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
        # the parsers' own words mislead here ("load it unsafely using allow_pickle=", "an internal
        # miniz error"): say what the file is not, and what to do
        if suffix == ".npy" and "pickle" in str(exc).lower():
            raise VectorFileError(f"{filename!r} is not a plain numeric .npy array (it holds Python objects, or is "
                                  "not .npy data at all); it was refused unread. Save the vector with numpy.save "
                                  "from a float array.") from None
        kind = {".safetensors": "safetensors", ".npy": ".npy", ".pt": "PyTorch", ".pth": "PyTorch"}.get(suffix, suffix)
        raise VectorFileError(f"{filename!r} is not a readable {kind} file: it is damaged, cut short, or holds other "
                              f"data ({_short(first_line(exc))}).") from None
    return check_vector(t, d_model)


def _short(text: str, limit: int = 80) -> str:
    """A parser's message cut at a word boundary, so a sentence never ends mid-word."""
    if len(text) <= limit:
        return text.rstrip(".")
    return text[:limit].rsplit(" ", 1)[0].rstrip(".,;:") + " …"


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


__all__ = ["MAX_VECTOR_FILE_BYTES", "PICKLE_REFUSAL", "check_file_size", "check_vector", "first_line",
           "read_vector_bytes", "refuse_pickle"]
