"""Reading uploaded vector files: round trips for each format, and refusals that never unpickle anything."""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import steering_core.vectors.uploads as vectors_mod
from steering_core import VectorFileError
from steering_core.vectors.uploads import check_vector, read_vector_bytes

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
    """Helper audit: junk .npy read "load it unsafely using allow_pickle=", which the user cannot act
    on, and junk .pt "an internal miniz error … Thi", cut mid-word."""
    with pytest.raises(VectorFileError) as info:
        read_vector_bytes(b"\x00\x01 definitely not a tensor file \xff" * 4, name, d_model=D)
    message = str(info.value)
    assert "allow_pickle" not in message and "unsafely" not in message
    assert re.search(r"is not a readable (\.npy|PyTorch|safetensors) file: it is damaged|refused unread", message)
    assert message.endswith((").", "unread. Save the vector with numpy.save from a float array.",
                             "Save vectors with safetensors or .npy instead."))


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


# =================================================================================================
# SteeringVector objects, their files (safetensors, GGUF control vectors) and the vector library
# =================================================================================================

from steering_core.vectors import (  # noqa: E402
    SteeringVector,
    VectorError,
    VectorStore,
    combine,
    export_gguf,
    from_safetensors_bytes,
    import_gguf,
    to_safetensors_bytes,
)


def _sv(name="happy", layer=3, seed=0, n=D, **kw) -> SteeringVector:
    return SteeringVector(name=name, layer=layer, direction=_vec(seed, n), **kw)


class _Boom:
    """A pickle that would create a marker file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _same(a: SteeringVector, b: SteeringVector) -> None:
    assert torch.equal(a.direction, b.direction)
    for attr in ("name", "layer", "method", "dataset", "model_id", "created", "meta", "operator"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert (a.reference is None) == (b.reference is None)
    if a.reference is not None:
        assert torch.equal(a.reference, b.reference)


# --- the object ----------------------------------------------------------------------------------


def test_vector_validation_and_views():
    v = SteeringVector("v", 2, torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert v.direction.dtype == torch.float32 and v.norm == 5.0 and v.d_model == 2
    assert torch.allclose(v.unit(), torch.tensor([0.6, 0.8]))
    assert v.created.endswith("+00:00") and v.operator == "add" and v.method == "manual"
    with pytest.raises(VectorError, match="NaN or infinite"):
        SteeringVector("v", 0, torch.tensor([1.0, float("nan")]))
    with pytest.raises(VectorError, match="NaN or infinite"):
        SteeringVector("v", 0, torch.tensor([1.0, float("inf")]))
    with pytest.raises(VectorError, match="floating-point"):
        SteeringVector("v", 0, torch.arange(4))
    with pytest.raises(VectorError, match="one-dimensional"):
        SteeringVector("v", 0, torch.ones(2, 4))
    with pytest.raises(VectorError, match="0 or more"):
        SteeringVector("v", -1, torch.ones(4))
    with pytest.raises(VectorError, match="whole number"):
        SteeringVector("v", 1.5, torch.ones(4))
    with pytest.raises(VectorError, match="Unknown operator"):
        SteeringVector("v", 0, torch.ones(4), operator="mul")
    with pytest.raises(VectorError, match="reference point"):
        SteeringVector("v", 0, torch.ones(4), operator="ace")
    with pytest.raises(VectorError, match="length 3"):
        SteeringVector("v", 0, torch.ones(4), operator="ace", reference=torch.ones(3))
    with pytest.raises(VectorError, match="Only ACE"):
        SteeringVector("v", 0, torch.ones(4), reference=torch.ones(4))
    with pytest.raises(VectorError, match="all zeros"):
        SteeringVector("z", 0, torch.zeros(4)).unit()
    src = torch.ones(4)
    v = SteeringVector("v", 0, src)
    src += 1  # the vector holds its own copy
    assert torch.equal(v.direction, torch.ones(4))


def test_arithmetic_exact_values_and_recorded_formula():
    a = SteeringVector("a", 4, torch.tensor([1.0, 2.0, 3.0]), model_id="m")
    b = SteeringVector("b", 4, torch.tensor([0.5, -1.0, 4.0]), model_id="m")
    cases = {
        "a + b": (a + b, [1.5, 1.0, 7.0]),
        "a - b": (a - b, [0.5, 3.0, -1.0]),
        "-a": (-a, [-1.0, -2.0, -3.0]),
        "2 * a": (2.0 * a, [2.0, 4.0, 6.0]),
        "2 * a (right)": (a * 2.0, [2.0, 4.0, 6.0]),
        "a / 2": (a / 2.0, [0.5, 1.0, 1.5]),
        "combine": (combine([(a, 1.0), (b, 2.0)], "mix"), [2.0, 0.0, 11.0]),
    }
    for label, (v, want) in cases.items():
        assert torch.equal(v.direction, torch.tensor(want)), label
        assert v.method == "arithmetic" and v.layer == 4 and v.model_id == "m", label
        assert v.meta["formula"] and v.meta["terms"], label
    assert (a + b).meta["formula"] == "a + b" and (a + b).name == "a plus b"
    assert (a - b).meta["terms"] == [{"name": "a", "weight": 1.0, "method": "manual", "created": a.created},
                                     {"name": "b", "weight": -1.0, "method": "manual", "created": b.created}]
    assert (2 * a).meta["formula"] == "2 * a" and (a / 2).meta["formula"] == "a / 2"
    assert ((a + b) - a).meta["formula"] == "(a + b) - a"
    assert cases["combine"][0].name == "mix" and cases["combine"][0].meta["formula"] == "1 * a + 2 * b"
    assert combine([(a, 1), (b, 1)]).name == "1 x a plus 1 x b"
    # inputs are untouched
    assert torch.equal(a.direction, torch.tensor([1.0, 2.0, 3.0]))


def test_arithmetic_refusals():
    a = _sv("a", layer=3)
    with pytest.raises(VectorError, match="layer 3.*layer 5"):
        a + _sv("b", layer=5)
    with pytest.raises(VectorError, match="length 16.*length 8"):
        a - _sv("b", layer=3, n=8)
    with pytest.raises(VectorError, match="layer"):
        combine([(a, 1.0), (_sv("c", layer=4), 1.0)])
    with pytest.raises(VectorError, match="at least one"):
        combine([])
    with pytest.raises(VectorError, match="finite number"):
        combine([(a, float("nan"))])
    with pytest.raises(VectorError, match="zero"):
        a / 0
    ace = SteeringVector("ace", 3, _vec(1), operator="ace", reference=_vec(2))
    for op in (lambda: ace + a, lambda: a - ace, lambda: -ace, lambda: 2 * ace, lambda: ace / 2,
               lambda: combine([(ace, 1.0)])):
        with pytest.raises(VectorError, match="ACE.*not additive|instead of adding"):
            op()
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(TypeError):
        a * a


# --- safetensors -------------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_tensors_and_metadata():
    v = _sv("happy (v2)", layer=7, method="caa", dataset="emotions", model_id="gpt2",
            meta={"n_pairs": 64, "notes": "ünïcode", "nested": {"a": [1, 2.5]}})
    back = from_safetensors_bytes(to_safetensors_bytes(v))
    _same(v, back)
    ace = SteeringVector("ace", 2, _vec(1), operator="ace", reference=_vec(2), method="caa")
    _same(ace, from_safetensors_bytes(to_safetensors_bytes(ace)))
    # name= and layer= override the file
    again = from_safetensors_bytes(to_safetensors_bytes(v), name="other", layer=1)
    assert again.name == "other" and again.layer == 1


def test_plain_safetensors_files():
    t = _vec(3)
    assert torch.equal(from_safetensors_bytes(st_save({"v": t}), layer=2).direction, t)
    # one 1-D tensor among others is taken; half precision becomes float32
    v = from_safetensors_bytes(st_save({"mat": torch.ones(2, 2), "v": t.half()}), layer=2)
    assert v.direction.dtype == torch.float32 and torch.equal(v.direction, t.half().float())
    assert from_safetensors_bytes(st_save({"v": t.to(torch.bfloat16)}), layer=0).direction.dtype == torch.float32
    with pytest.raises(VectorError, match="no 'layer' metadata"):
        from_safetensors_bytes(st_save({"v": t}))
    with pytest.raises(VectorError, match="cannot tell"):
        from_safetensors_bytes(st_save({"a": t, "b": t.clone()}), layer=0)


@pytest.mark.parametrize("tensor, match", [
    (torch.tensor([1.0, float("nan"), 2.0]), "NaN or infinite"),
    (torch.tensor([1.0, float("-inf"), 2.0]), "NaN or infinite"),
    (torch.arange(D, dtype=torch.int32), "floating-point"),
    (torch.ones(D, dtype=torch.bool), "floating-point"),
    (torch.ones(2, D), "one-dimensional"),
])
def test_safetensors_bad_tensors_are_refused(tensor, match):
    with pytest.raises(VectorError, match=match):
        from_safetensors_bytes(st_save({"direction": tensor}, metadata={"layer": "1"}))


def test_safetensors_bad_metadata_is_refused():
    t = _vec(0)
    with pytest.raises(VectorError, match="whole number"):
        from_safetensors_bytes(st_save({"direction": t}, metadata={"layer": "-3"}))
    with pytest.raises(VectorError, match="not valid JSON"):
        from_safetensors_bytes(st_save({"direction": t}, metadata={"layer": "1", "meta": "{"}))
    with pytest.raises(VectorError, match="no 'reference'"):
        from_safetensors_bytes(st_save({"direction": t}, metadata={"layer": "1", "operator": "ace"}))
    with pytest.raises(VectorError, match="newer"):
        from_safetensors_bytes(st_save({"direction": t}, metadata={"layer": "1", "format": "steering-core-vector",
                                                                    "version": "99"}))
    # a path-like name inside a file is not trusted: it falls back to a plain name
    assert from_safetensors_bytes(st_save({"direction": t}, metadata={"layer": "1", "name": "../x"})).name == "vector"


def test_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payloads = {
        "pickle": pickle.dumps(_Boom(marker)),
        "pickle protocol 0": pickle.dumps(_Boom(marker), protocol=0),
        "torch.save zip": _pt({"direction": _Boom(marker)}),
        "torch.save legacy": _pt(_Boom(marker), _use_new_zipfile_serialization=False),
        "torch.save tensor": _pt(_vec(0)),
    }
    for label, data in payloads.items():
        with pytest.raises(VectorError, match="pickle|not a safetensors") as info:
            from_safetensors_bytes(data, layer=1)
        if label != "pickle protocol 0":
            assert "never loaded" in str(info.value), label
        with pytest.raises(VectorError):
            import_gguf(data)
    assert not marker.exists()
    pt_file = tmp_path / "evil.gguf"
    pt_file.write_bytes(payloads["torch.save zip"])
    with pytest.raises(VectorError, match="never loaded"):
        import_gguf(pt_file)
    assert not marker.exists()


def test_oversized_and_garbage_vector_files_are_refused(monkeypatch):
    data = to_safetensors_bytes(_sv())
    monkeypatch.setattr(vectors_mod, "MAX_VECTOR_FILE_BYTES", len(data) - 1)
    with pytest.raises(VectorError, match="limit"):
        from_safetensors_bytes(data)
    with pytest.raises(VectorError, match="limit"):
        import_gguf(data)
    monkeypatch.setattr(vectors_mod, "MAX_VECTOR_FILE_BYTES", len(data))
    assert from_safetensors_bytes(data).name == "happy"
    for junk in (b"", b"hello world, not a tensor", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}" + b" " * 8):
        with pytest.raises(VectorError):
            from_safetensors_bytes(junk)


# --- GGUF control vectors ----------------------------------------------------------------------


def test_gguf_round_trip_read_with_the_gguf_package(tmp_path):
    import gguf

    vecs = [_sv("happy", layer=5, seed=1), _sv("calm", layer=2, seed=2), _sv("brave", layer=11, seed=3)]
    path = export_gguf(vecs, tmp_path / "mood.gguf", model_hint="llama")
    assert path == tmp_path / "mood.gguf" and not list(tmp_path.glob(".*tmp"))
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    assert reader.get_field("controlvector.layer_count").contents() == 3
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.11", "direction.2", "direction.5"]
    for v in vecs:
        t = tensors[f"direction.{v.layer}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and [int(x) for x in t.shape] == [D]
        assert np.array_equal(np.asarray(t.data), v.direction.numpy())
    del reader, tensors
    back = import_gguf(path)
    assert [b.layer for b in back] == [2, 5, 11]
    assert [b.name for b in back] == ["mood.L2", "mood.L5", "mood.L11"]
    by_layer = {v.layer: v for v in vecs}
    for b in back:
        assert torch.equal(b.direction, by_layer[b.layer].direction)
        assert b.method == "gguf" and b.meta["model_hint"] == "llama"
    # bytes work as well, and a single vector can be exported on its own
    one = export_gguf(vecs[0], tmp_path / "one.gguf", model_hint="gpt2")
    (only,) = import_gguf(one.read_bytes(), name="joy")
    assert only.name == "joy.L5" and torch.equal(only.direction, vecs[0].direction)
    # readable by others, as a plain open would make it (mkstemp alone gives 0600)
    import os
    import stat

    from steering_core.storage.files import file_mode

    assert stat.S_IMODE(os.stat(path).st_mode) == file_mode()


def test_gguf_export_to_a_folder_that_cannot_be_written_is_a_sentence(tmp_path):
    from pathlib import Path

    # /proc refuses new files even to root (a read-only mount or a folder without permission does too)
    with pytest.raises(VectorError, match=r"Cannot write /proc/x\.gguf"):
        export_gguf(_sv(layer=5), Path("/proc/x.gguf"), "llama")


def test_gguf_export_refusals(tmp_path):
    with pytest.raises(VectorError, match="block 0.*direction.0"):
        export_gguf(_sv(layer=0), tmp_path / "x.gguf", "llama")
    with pytest.raises(VectorError, match="both on layer 3"):
        export_gguf([_sv("a", layer=3), _sv("b", layer=3, seed=1)], tmp_path / "x.gguf", "llama")
    with pytest.raises(VectorError, match="length"):
        export_gguf([_sv("a", layer=3), _sv("b", layer=4, n=8)], tmp_path / "x.gguf", "llama")
    with pytest.raises(VectorError, match="ACE"):
        export_gguf(SteeringVector("ace", 3, _vec(1), operator="ace", reference=_vec(2)), tmp_path / "x.gguf", "llama")
    with pytest.raises(VectorError, match="does not exist"):
        export_gguf(_sv(), tmp_path / "missing" / "x.gguf", "llama")
    assert list(tmp_path.iterdir()) == []


def _write_gguf(path, arch="controlvector", tensors=None):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_string(f"{arch}.model_hint", "llama")
    for name, arr in (tensors or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch, tensors, match", [
    ("llama", {"direction.1": np.ones(D, np.float32)}, "not a control vector"),
    ("controlvector", {"direction.1": np.array([1, np.nan] * (D // 2), np.float32)}, "direction.1.*NaN"),
    ("controlvector", {"direction.1": np.ones(D, np.float16)}, "F16.*float32"),
    ("controlvector", {"direction.1": np.ones((2, D), np.float32)}, "one-dimensional"),
    ("controlvector", {"direction.1": np.ones(D, np.float32), "direction.2": np.ones(8, np.float32)}, "mixes"),
    ("controlvector", {"weights.1": np.ones(D, np.float32)}, "only direction"),
    ("controlvector", {"direction.1": np.ones(D, np.float32), "direction.01": np.ones(D, np.float32)}, "two tensors"),
    ("controlvector", {}, "no direction"),
])
def test_gguf_import_refusals(tmp_path, arch, tensors, match):
    with pytest.raises(VectorError, match=match):
        import_gguf(_write_gguf(tmp_path / "bad.gguf", arch, tensors))


def test_gguf_import_rejects_non_gguf(tmp_path):
    with pytest.raises(VectorError, match="not a GGUF"):
        import_gguf(b"GGML and more bytes")
    with pytest.raises(VectorError, match="not a readable GGUF file: it is damaged or cut short") as exc:
        import_gguf(b"GGUF\x03\x00\x00\x00")
    assert "dtype" not in str(exc.value)  # the audit saw numpy's own words here
    with pytest.raises(VectorError, match="damaged or cut short") as exc:
        import_gguf(b"GGUF" + bytes(range(256)) * 2)
    assert "dtype" not in str(exc.value) and "divisor" not in str(exc.value)
    with pytest.raises(VectorError, match="No file"):
        import_gguf(tmp_path / "nope.gguf")


# --- the library --------------------------------------------------------------------------------


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix != ".wal")


def test_store_save_load_overwrite_delete(tmp_path):
    with VectorStore(tmp_path) as store:
        v = _sv("happy", layer=4, method="caa", dataset="emotions", meta={"k": 1})
        assert store.save(v) == "happy"
        assert [f.split(".")[0] for f in _files(tmp_path / "vectors")] == ["happy"]
        import os
        import stat

        from steering_core.storage.files import file_mode

        (saved,) = (tmp_path / "vectors").iterdir()
        assert stat.S_IMODE(os.stat(saved).st_mode) == file_mode()  # not mkstemp's 0600
        _same(v, store.load("happy"))
        assert store.names() == ["happy"] and "happy" in store and len(store) == 1
        (row,) = store.summaries()
        assert {k: row[k] for k in ("name", "method", "layer", "dataset", "created")} == {
            "name": "happy", "method": "caa", "layer": 4, "dataset": "emotions", "created": v.created}
        assert row["norm"] == pytest.approx(v.norm)
        with pytest.raises(VectorError, match="already exists"):
            store.save(_sv("happy", seed=9))
        with pytest.raises(VectorError, match="capitals"):
            store.save(_sv("HAPPY", seed=9))
        assert torch.equal(store.load("happy").direction, v.direction)
        w = _sv(" happy ", layer=6, seed=9)
        assert store.save(w, overwrite=True) == "happy"
        assert torch.equal(store.load("happy").direction, w.direction) and store.load("happy").layer == 6
        assert store.summaries()[0]["layer"] == 6
        assert len(_files(tmp_path / "vectors")) == 1  # the replaced file is gone
        store.delete("happy")
        assert store.names() == [] and _files(tmp_path / "vectors") == []
        with pytest.raises(VectorError, match="No saved vector"):
            store.load("happy")
        with pytest.raises(VectorError, match="No saved vector"):
            store.delete("happy")
    # reopening sees what was saved
    with VectorStore(tmp_path) as store:
        store.save(_sv("kept"))
    with VectorStore(tmp_path) as store:
        assert store.names() == ["kept"]


@pytest.mark.parametrize("bad", ["../evil", "a/b", "a\\b", ".x", "", "   ", "..", "x" * 81, "a\x00b", "nul"])
def test_store_refuses_unsafe_names_and_writes_nothing(tmp_path, bad):
    root = tmp_path / "lib"
    with VectorStore(root) as store:
        before = _files(tmp_path)
        with pytest.raises(VectorError):
            store.save(_named(bad))
        with pytest.raises(VectorError):
            store.load(bad)
        assert _files(tmp_path) == before
        assert store.names() == []
    assert not (tmp_path / "evil.safetensors").exists() and not (root / "evil.safetensors").exists()


def _named(name):
    v = _sv("placeholder")
    v.name = name  # set after construction, which only checks for a non-empty name: save() must refuse it
    return v


def test_failed_database_write_leaves_nothing_half_saved(tmp_path, monkeypatch):
    with VectorStore(tmp_path) as store:
        def boom(*a, **k):
            raise RuntimeError("disk full")

        monkeypatch.setattr(store, "_insert", boom)
        with pytest.raises(VectorError, match="disk full.*nothing was saved"):
            store.save(_sv("new"))
        assert store.names() == [] and _files(tmp_path / "vectors") == []
        monkeypatch.undo()
        old = _sv("keep", seed=1)
        store.save(old)
        monkeypatch.setattr(store, "_insert", boom)
        with pytest.raises(VectorError, match="nothing was saved"):
            store.save(_sv("keep", seed=2), overwrite=True)
        monkeypatch.undo()
        assert len(_files(tmp_path / "vectors")) == 1
        _same(old, store.load("keep"))


def test_store_shares_a_connection_and_lock_and_touches_only_its_table(tmp_path):
    import threading

    from steering_core.storage.db import connect

    con = connect(tmp_path / "library.duckdb")
    con.execute("CREATE TABLE datasets (name TEXT PRIMARY KEY)")
    con.execute("INSERT INTO datasets VALUES ('mine')")
    lock = threading.RLock()
    store = VectorStore(tmp_path, con=con, lock=lock)
    store.save(_sv("v"))
    store.close()  # a shared connection stays open
    assert con.execute("SELECT name FROM datasets").fetchall() == [("mine",)]
    assert con.execute("SELECT name, layer FROM vectors").fetchall() == [("v", 3)]
    con.close()


def test_vector_becomes_a_steering_term(tiny_hf):
    from steering_core.model.operators import AceTerm
    from steering_core.model.steering import SteeringTerm

    d = tiny_hf.d_model
    t = SteeringVector("v", 1, _vec(0, d)).term(tiny_hf, 2.0)
    assert type(t) is SteeringTerm and t.layer == 1 and t.alpha == 2.0
    a = SteeringVector("a", 2, _vec(1, d), operator="ace", reference=_vec(2, d)).term(tiny_hf, 0.5)
    assert isinstance(a, AceTerm) and a.layer == 2 and a.reference is not None
    with pytest.raises(Exception, match="out of range"):
        SteeringVector("v", 99, _vec(0, d)).term(tiny_hf)
