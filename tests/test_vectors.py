"""Reading uploaded vector files: round trips for each format, and refusals that never unpickle anything."""

from __future__ import annotations

import io
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import steering_core.vectors as vectors_mod
from steering_core import VectorFileError
from steering_core.vectors import check_vector, read_vector_bytes

D = 16


def _vec(seed: int = 0, n: int = D) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _npy(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _pt(obj, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


# --- round trips ---------------------------------------------------------------------------------


def test_safetensors_single_tensor_round_trip():
    v = _vec(1)
    got = read_vector_bytes(st_save({"whatever": v}), "v.safetensors", d_model=D)
    assert got.dtype == torch.float32 and torch.equal(got, v)
    half = read_vector_bytes(st_save({"v": v.half()}), "v.safetensors", d_model=D)
    assert half.dtype == torch.float32 and torch.equal(half, v.half().float())
    # upper-case suffixes are fine too
    assert torch.equal(read_vector_bytes(st_save({"v": v}), "V.SAFETENSORS"), v)


def test_safetensors_several_tensors_pick_by_key_or_by_width():
    a, b = _vec(1), _vec(2)
    data = st_save({"a": a, "b": b, "bias": torch.zeros(3)})
    assert torch.equal(read_vector_bytes(data, "v.safetensors", d_model=D, key="b"), b)
    assert torch.equal(read_vector_bytes(data, "v.safetensors", d_model=D, key="a"), a)
    with pytest.raises(VectorFileError, match="several tensors"):  # a and b both fit d_model
        read_vector_bytes(data, "v.safetensors", d_model=D)
    with pytest.raises(VectorFileError, match="No tensor named 'c'"):
        read_vector_bytes(data, "v.safetensors", d_model=D, key="c")
    # exactly one tensor of the model's width: that one is meant
    only = st_save({"vec": a, "bias": torch.zeros(3)})
    assert torch.equal(read_vector_bytes(only, "v.safetensors", d_model=D), a)
    with pytest.raises(VectorFileError, match="several tensors"):  # without d_model it is ambiguous
        read_vector_bytes(only, "v.safetensors")


def test_npy_round_trip():
    v = _vec(3)
    got = read_vector_bytes(_npy(v.numpy()), "v.npy", d_model=D)
    assert got.dtype == torch.float32 and torch.equal(got, v)
    as64 = read_vector_bytes(_npy(v.double().numpy()), "v.npy", d_model=D)
    assert torch.equal(as64, v)  # float32 -> float64 -> float32 is exact
    ints = read_vector_bytes(_npy(np.arange(D, dtype=np.int64)), "v.npy", d_model=D)
    assert torch.equal(ints, torch.arange(D, dtype=torch.float32))
    big_endian = read_vector_bytes(_npy(v.numpy().astype(">f4")), "v.npy", d_model=D)
    assert torch.equal(big_endian, v)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_pt_round_trip(suffix):
    v = _vec(4)
    got = read_vector_bytes(_pt(v), "v" + suffix, d_model=D)
    assert got.dtype == torch.float32 and torch.equal(got, v)
    assert torch.equal(read_vector_bytes(_pt({"steer": v, "step": 3}), "v" + suffix, d_model=D), v)
    two = {"a": v, "b": _vec(5)}
    assert torch.equal(read_vector_bytes(_pt(two), "v" + suffix, d_model=D, key="b"), _vec(5))
    with pytest.raises(VectorFileError, match="several tensors"):
        read_vector_bytes(_pt(two), "v" + suffix, d_model=D)
    with pytest.raises(VectorFileError, match="no tensors"):
        read_vector_bytes(_pt({"x": [1.0, 2.0]}), "v" + suffix)
    with pytest.raises(VectorFileError, match="does not contain a tensor"):
        read_vector_bytes(_pt([v]), "v" + suffix)


def test_row_vector_and_stack_shapes():
    v = _vec(6)
    assert read_vector_bytes(_pt(v.unsqueeze(0)), "v.pt", d_model=D).shape == (D,)  # [1, d] -> [d]
    stack = torch.stack([_vec(s) for s in range(3)])
    got = read_vector_bytes(st_save({"s": stack}), "v.safetensors", d_model=D)
    assert got.shape == (3, D) and torch.equal(got, stack)
    with pytest.raises(VectorFileError, match="shape \\(\\)"):
        read_vector_bytes(_npy(np.array(3.0)), "v.npy")
    with pytest.raises(VectorFileError, match="shape \\(2, 3, 16\\)"):
        read_vector_bytes(_npy(np.zeros((2, 3, D))), "v.npy")
    with pytest.raises(VectorFileError, match="shape \\(0,\\)"):
        read_vector_bytes(_npy(np.zeros(0, dtype=np.float32)), "v.npy")


# --- files that must never be unpickled ----------------------------------------------------------


class _Payload:
    """Unpickling this creates a directory: proof that the file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _assert_payload_is_live(data: bytes, loader, marker) -> None:
    """Sanity check of the test itself: an unsafe loader really runs the payload."""
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loader(data)
        except Exception:  # noqa: BLE001 - the payload ran before any failure to build an array
            pass
    assert marker.exists()


def test_raw_pickle_named_npy_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Payload(marker))
    with pytest.raises(VectorFileError, match="v.npy"):
        read_vector_bytes(data, "v.npy", d_model=D)
    assert not marker.exists()
    _assert_payload_is_live(data, pickle.loads, marker)


def test_object_array_npy_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    data = _npy(np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(VectorFileError, match="v.npy"):
        read_vector_bytes(data, "v.npy", d_model=D)
    assert not marker.exists()
    _assert_payload_is_live(data, lambda b: np.load(io.BytesIO(b), allow_pickle=True), marker)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("wrap", ["bare", "next_to_a_tensor"])
def test_malicious_pt_is_refused_without_running_it(tmp_path, legacy, wrap):
    marker = tmp_path / "pwned"
    obj = _Payload(marker) if wrap == "bare" else {"v": _vec(0), "extra": _Payload(marker)}
    kw = {"_use_new_zipfile_serialization": False} if legacy else {}
    data = _pt(obj, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VectorFileError, match="v.pt"):
            read_vector_bytes(data, "v.pt", d_model=D, key="v")
    assert not marker.exists()
    _assert_payload_is_live(data, lambda b: torch.load(io.BytesIO(b), weights_only=False), marker)


def test_pickle_named_pt_or_pkl_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Payload(marker))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VectorFileError):
            read_vector_bytes(data, "v.pt")
    with pytest.raises(VectorFileError, match="Unsupported file type .pkl"):
        read_vector_bytes(data, "v.pkl")
    assert not marker.exists()


# --- bad contents --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,name",
    [
        (lambda: st_save({"v": torch.ones(D - 1)}), "v.safetensors"),
        (lambda: _npy(np.ones(D + 1, dtype=np.float32)), "v.npy"),
        (lambda: _pt(torch.ones(2, D + 3)), "v.pt"),
    ],
)
def test_wrong_length_mentions_d_model(data, name):
    with pytest.raises(VectorFileError, match=f"d_model is {D}"):
        read_vector_bytes(data(), name, d_model=D)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("fmt", ["safetensors", "npy", "pt"])
def test_non_finite_values_are_refused(bad, fmt):
    v = _vec(7)
    v[3] = bad
    data = {"safetensors": lambda: st_save({"v": v}), "npy": lambda: _npy(v.numpy()), "pt": lambda: _pt(v)}[fmt]()
    with pytest.raises(VectorFileError, match="NaN or infinite"):
        read_vector_bytes(data, "v." + fmt, d_model=D)


@pytest.mark.parametrize("name", ["v.npy", "v.pt", "v.safetensors", "v.txt"])
def test_empty_file_is_refused(name):
    with pytest.raises(VectorFileError, match="empty"):
        read_vector_bytes(b"", name, d_model=D)


@pytest.mark.parametrize("name", ["v.txt", "v.pkl", "v.json", "v", "", "v.npy.exe"])
def test_unsupported_suffix_is_refused(name):
    data = _npy(_vec(0).numpy())  # a perfectly good .npy payload, under the wrong name
    with pytest.raises(VectorFileError, match="Unsupported file type"):
        read_vector_bytes(data, name, d_model=D)


@pytest.mark.parametrize("name", ["v.npy", "v.pt", "v.safetensors"])
def test_garbage_bytes_are_refused(name):
    with pytest.raises(VectorFileError, match="Could not read|refused unread"):
        read_vector_bytes(b"\x00\x01 definitely not a tensor file \xff" * 4, name, d_model=D)


@pytest.mark.parametrize(
    "data,name,match",
    [
        (lambda: _npy(np.ones(D, dtype=np.complex64)), "v.npy", "complex64"),
        (lambda: _npy(np.ones(D, dtype=bool)), "v.npy", "bool"),
        (lambda: _npy(np.array(["a"] * D)), "v.npy", "<U1"),
        (lambda: _pt(torch.ones(D, dtype=torch.complex64)), "v.pt", "complex64"),
        (lambda: _pt(torch.ones(D, dtype=torch.bool)), "v.pt", "bool"),
        (lambda: st_save({"v": torch.ones(D, dtype=torch.bool)}), "v.safetensors", "bool"),
    ],
)
def test_non_real_dtypes_are_refused(data, name, match):
    with pytest.raises(VectorFileError, match=match):
        read_vector_bytes(data(), name, d_model=D)


def test_check_vector_directly():
    assert torch.equal(check_vector(torch.arange(D, dtype=torch.int32), D), torch.arange(D).float())
    with pytest.raises(VectorFileError, match="complex"):
        check_vector(torch.ones(D, dtype=torch.complex128), D)
    with pytest.raises(VectorFileError, match="d_model is 8"):
        check_vector(torch.ones(D), 8)


def test_oversize_file_is_refused_before_parsing(monkeypatch):
    data = st_save({"v": _vec(0)})
    monkeypatch.setattr(vectors_mod, "MAX_VECTOR_FILE_BYTES", len(data))
    assert torch.equal(read_vector_bytes(data, "v.safetensors", d_model=D), _vec(0))  # at the limit: fine
    monkeypatch.setattr(vectors_mod, "MAX_VECTOR_FILE_BYTES", len(data) - 1)
    with pytest.raises(VectorFileError, match="limit"):
        read_vector_bytes(data, "v.safetensors", d_model=D)
    # the size check comes first: even an unsupported or unsafe file is refused for its size alone
    with pytest.raises(VectorFileError, match="limit"):
        read_vector_bytes(b"x" * len(data), "v.pkl")
