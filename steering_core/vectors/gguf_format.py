"""GGUF control vectors: the format repeng writes and llama.cpp reads with ``--control-vector``.

A file has ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (a model type
such as ``"llama"``), ``controlvector.layer_count``, and one float32 1-D tensor ``direction.{N}``
per layer. In llama.cpp, ``common_control_vector_load_one`` (common/common.cpp) stores
``direction.N`` for layer N, ``llama_adapter_cvec`` (src/llama-adapter.cpp) adds it with
``apply_to(cur, il)``, and every model graph calls ``build_cvec(cur, il)`` at the end of its
``for il in 0..n_layer`` loop, right before ``l_out``: so ``direction.N`` is added to the output
of block N (0-based), exactly our ``layer``. repeng agrees: its layer ``i`` is
``model.layers[i]`` and it reads ``hidden_states[i + 1]``. llama.cpp rejects ``direction.0``
("there's never a tensor for layer 0"), so the output of block 0 cannot be steered through a
GGUF file: exporting a layer-0 vector raises :class:`VectorError`. Several tensors for one layer
are summed by llama.cpp; here they are refused, so a file always means one vector per layer.
Control vectors are added, so only vectors whose operator is additive can be exported (not ACE).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import torch

from steering_core.errors import VectorError
from steering_core.names import MAX_NAME_CHARS, NAME_PUNCTUATION
from steering_core.storage.files import file_mode
from steering_core.vectors.uploads import check_file_size, first_line, refuse_pickle
from steering_core.vectors.vector import SteeringVector, clean_vector_name

GGUF_ARCH = "controlvector"
_NAME_PUNCT = frozenset(" " + NAME_PUNCTUATION)


def _safe_stem(stem: str) -> str:
    """A file stem made into a valid name prefix (disallowed characters become '_')."""
    text = "".join(c if (c.isalnum() or c in _NAME_PUNCT) else "_" for c in unicodedata.normalize("NFC", stem))
    while ".." in text:
        text = text.replace("..", ".")
    text = text.strip().lstrip(".").strip()[: MAX_NAME_CHARS - 8].strip()
    try:
        return clean_vector_name(text)
    except VectorError:
        return "controlvector"




def _atomic_target(path: Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise VectorError(f"{path} is a folder; give a file name such as {path / 'vector.gguf'}.")
    if not path.parent.is_dir():
        raise VectorError(f"The folder {path.parent} does not exist.")
    return path


def _refuse_adaptor(v: SteeringVector) -> None:
    """A trained adaptor (LoReFT, LoReST) is matrices and a bias, not one added vector per layer,
    which is all a control-vector file holds: refuse with a sentence that says where it can go."""
    from steering_core.vectors.trained.adaptor import bound_adaptor, looks_like_adaptor

    adaptor = bound_adaptor(v.operator)
    if adaptor is None and looks_like_adaptor(v.operator) is None:
        return
    if adaptor is None:
        what = f"{looks_like_adaptor(v.operator)} adaptor"
    else:
        what = f"{adaptor.spec.label} adaptor (rank {adaptor.rank}, parameters {', '.join(adaptor.params)})"
    raise VectorError(f"{v.name!r} is a trained {what}, not a single vector; a GGUF control vector holds "
                      "only one added vector per layer, so it cannot be exported. Save it as .safetensors instead, "
                      "which keeps the whole adaptor and its config.")


def export_gguf(vectors: "list[SteeringVector] | SteeringVector", path: str | os.PathLike, model_hint: str) -> Path:
    """Write a llama.cpp control-vector file: one float32 tensor ``direction.{layer}`` per
    vector, ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (a model
    type such as ``"llama"``; llama.cpp does not check it) and ``controlvector.layer_count``
    (number of tensors, as repeng writes it). Layer 0, non-additive vectors (ACE), two vectors on
    one layer and mixed widths are refused. Written to a temporary file and moved into place."""
    import gguf

    vecs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not vecs:
        raise VectorError("Nothing to export: give at least one vector.")
    by_layer: dict[int, SteeringVector] = {}
    for v in vecs:
        if not isinstance(v, SteeringVector):
            raise VectorError(f"export_gguf needs SteeringVector objects, not {type(v).__name__}.")
        op = v.operator_spec
        _refuse_adaptor(v)
        if not op.additive:
            raise VectorError(f"{v.name!r} is {op.article} {op.label} vector; GGUF control vectors can only be added "
                              "to the residual stream, so it cannot be exported.")
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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise VectorError(f"Cannot write {path}: {exc.strerror or exc}.") from None
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
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise VectorError(f"Could not write {path} ({exc.strerror or first_line(exc)}).") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def gguf_bytes(vectors: "list[SteeringVector] | SteeringVector", model_hint: str) -> bytes:
    """:func:`export_gguf` into memory, for a download button."""
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
        check_file_size(len(data), "GGUF file")
        label, stem, src, from_path = "The GGUF file", "controlvector", None, False
        head = data[:4]
    else:
        src = Path(path_or_bytes).expanduser()
        if not src.is_file():
            raise VectorError(f"No file at {src}.")
        check_file_size(src.stat().st_size, "GGUF file")
        with open(src, "rb") as fh:
            head = fh.read(4)
        label, stem, data, from_path = str(src.name), src.stem, None, True
    refuse_pickle(head)
    if head != b"GGUF":
        raise VectorError(f"{label} is not a GGUF file (it does not start with 'GGUF').")
    prefix = clean_vector_name(name) if name is not None else _safe_stem(stem)
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
            # the parser's own words (numpy dtype sizes, offsets) mean nothing to the person importing
            raise VectorError(f"{label} is not a readable GGUF file: it is damaged or cut short "
                              f"({type(exc).__name__} while reading it).") from None
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


__all__ = ["GGUF_ARCH", "export_gguf", "gguf_bytes", "import_gguf"]
