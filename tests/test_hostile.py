"""Hostile input, table-driven: every page, the library behind it and the pack CLI get bad input
and must answer with one clear sentence while losing and writing nothing.

Each row of ``CASES`` is one bad input (or, where marked ``control``, an unusual input that must
work). For every row the test

1. gives each case its own cache (``STEERING_CACHE_DIR``) holding a saved dataset, vector and
   preset, so a failed overwrite that destroyed one would show;
2. takes a logical snapshot of everything under the case's temporary folder (every file's
   sha256, except DuckDB files, whose tables are dumped row by row);
3. runs the input through the library (``lib``), a page driven by Streamlit's AppTest (``page``)
   or ``python -m steering_core.pack`` (``cli``);
4. checks the message: a :class:`SteeringCoreError` matching the case's words; on a page an
   ``st.error``/``st.warning`` with them and no exception element; on the CLI a non-zero exit
   with one line on stderr and no traceback;
5. checks the snapshot is unchanged, and that a marker file a pickle payload would create does
   not exist.

A row may carry ``xfail`` (strict) for a known, reported bug; it then fails the day the bug is
fixed, so the mark cannot outlive it. (None does today: the suite's first run found 20 bugs, all
fixed.)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from steering_core import datasets as dsm
from steering_core import vectors as vm
from steering_core.browse import search, usernotes
from steering_core.errors import SteeringCoreError
from steering_core.measure import alpha as alpha_mod
from steering_core.measure import live, nexttoken
from steering_core.vectors import methods

ROOT = Path(__file__).resolve().parent.parent

# torch.load says so when a pickle disguised as a .pt file reaches its weights-only unpickler (refused)
pytestmark = [pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
              pytest.mark.heavy]  # a minute or more: scheduled first (tests/conftest.py)

# ================================================================================================
# The snapshot: what "nothing lost, nothing written half-way" means
# ================================================================================================


def _dump_duckdb(path: Path) -> dict[str, list[str]]:
    """Every table's rows, sorted. Read-only when this process does not hold the file; the app's
    stores (same process) hold it read-write, and DuckDB then shares their instance."""
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.ConnectionException:
        con = duckdb.connect(str(path))
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' ORDER BY table_name").fetchall()]
        return {t: sorted(repr(r) for r in con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    finally:
        con.close()


def snapshot(root: Path) -> dict[str, Any]:
    """Every folder and file under ``root``: files by sha256, DuckDB files by their rows (their
    bytes and write-ahead logs change on a mere open or checkpoint)."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            out[rel] = "folder"
        elif p.name.endswith(".duckdb.wal"):
            continue
        elif p.suffix == ".duckdb":
            out[rel] = _dump_duckdb(p)
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ================================================================================================
# The environment a case runs in
# ================================================================================================


@dataclass
class Env:
    tmp: Path  # everything a case may touch lives here (snapshotted)
    cache: Path  # STEERING_CACHE_DIR
    model: Any  # tiny HF model for library cases (3 blocks, d_model 64)
    sae: Any  # tiny random SAE on it (128 features, block 1)
    monkeypatch: Any
    extra: dict = field(default_factory=dict)

    @property
    def marker(self) -> Path:
        """The file a pickle payload in these cases would create if it were ever unpickled."""
        return self.tmp / "PWNED"

    def page(self, name: str) -> AppTest:
        """A page of the app, reached the way a user does (the app routes with st.navigation)."""
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        at.switch_page(f"pages/{name}").run()
        assert not at.exception, at.exception
        return at


def prepare_library(cache: Path) -> None:
    """A library with one saved dataset, vector and preset, and every table the pages create, so a
    page opening the library changes nothing and a destroyed object would show in the snapshot."""
    from steering_core.browse.usernotes import UserNotes
    from steering_core.datasets import ContrastiveDataset, DatasetStore, Pair
    from steering_core.measure.sweep import SweepCache
    from steering_core.measure.vector_effects import EffectCache
    from steering_core.storage.presets import PresetStore
    from steering_core.vectors import SteeringVector, VectorStore

    cache.mkdir(parents=True)
    lib = cache / "library.duckdb"
    with DatasetStore(lib) as ds:
        ds.save(ContrastiveDataset("keep", [Pair("I love the wedding", "I love the meeting"),
                                            Pair("The bride smiled", "The clerk smiled")], "kept"))
    with VectorStore(cache) as vs:
        vs.save(SteeringVector("keepv", 1, torch.linspace(-1, 1, 64), method="caa", dataset="keep"))
    for table in (PresetStore, SweepCache, EffectCache):
        t = table(lib)
        if table is PresetStore:
            t.save("keep", {"alpha": 1.5, "prompt": "Hello"})
        t.close()
    UserNotes(cache / "user.duckdb").close()


def make_pack(pack_dir: Path, model, layer: int = 1, d_sae: int = 16) -> None:
    """A minimal feature pack (tables, a few labelled features, an SAE): enough for the Features
    page and the search functions, in a fraction of a second instead of a real build."""
    from steering_core.model.saes import save_sae, tiny_sae
    from steering_core.model.steerable import hook_name
    from steering_core.pack.tables import ensure_schema, set_meta
    from steering_core.storage.db import connect

    pack_dir.mkdir(parents=True)
    save_sae(tiny_sae(model, layer, d_sae=d_sae, k=4), pack_dir / "sae")
    con = connect(pack_dir / "pack.duckdb")
    ensure_schema(con)
    set_meta(con, {"model_id": model.name, "hook_point": hook_name(layer), "layer": str(layer),
                   "d_model": str(model.d_model), "d_sae": str(d_sae)})
    for f in range(d_sae):
        con.execute("INSERT INTO features (feature_id, label, auto_label, density, live) VALUES (?, ?, ?, ?, true)",
                    [f, f"label {f}", f"auto {f}", 0.01])
    con.close()


# ================================================================================================
# Bad files
# ================================================================================================


class _Payload:
    """Unpickling this creates ``path``: proof that a pickle was (or was not) executed."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def pt_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def st_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def raw_safetensors(metadata: dict, header_len: int | None = None) -> bytes:
    """A safetensors file written by hand (header padded to ``header_len`` bytes when given)."""
    body = np.linspace(-1, 1, 64, dtype=np.float32).tobytes()
    head = json.dumps({"direction": {"dtype": "F32", "shape": [64], "data_offsets": [0, len(body)]},
                       "__metadata__": metadata}).encode()
    if header_len is not None:
        assert len(head) <= header_len
        head += b" " * (header_len - len(head))
    return struct.pack("<Q", len(head)) + head + body


def saved_vector_with_header(n: int):
    """A vector whose own safetensors file (as the library writes it) has an ``n``-byte header."""
    from steering_core.vectors import SteeringVector, to_safetensors_bytes

    for pad in range(400):
        v = SteeringVector("long header", 1, torch.linspace(-1, 1, 64), method="caa", dataset="d" * pad,
                           created="2026-01-01T00:00:00+00:00")
        if struct.unpack("<Q", to_safetensors_bytes(v)[:8])[0] == n:
            return v
    raise AssertionError(f"no padding gives a {n}-byte header")


# ================================================================================================
# The table
# ================================================================================================


@dataclass(frozen=True)
class Case:
    id: str  # "<family>-<where>-<what>", the pytest id
    where: str  # "lib", "page" or "cli"
    act: Callable[[Env], Any]  # lib: must raise; page: returns the AppTest; cli: returns the CLI's arguments
    match: str  # regular expression the message must contain
    setup: Callable[[Env], None] | None = None  # before the snapshot (after the library is prepared)
    xfail: str = ""  # a real bug in a file this suite may not edit: the report, with its repro
    control: bool = False  # an unusual input that must simply work


CASES: list[Case] = []


def lib(id_, act, match, **kw):
    CASES.append(Case(id_, "lib", act, match, **kw))


def page(id_, act, match, **kw):
    assert act.page  # which page the row drives (set by the helper that built it)
    CASES.append(Case(id_, "page", act, match, **kw))


def cli(id_, act, match, **kw):
    CASES.append(Case(id_, "cli", act, match, **kw))


# -- helpers the rows share ------------------------------------------------------------------------

def _ds_store(env):
    from steering_core.datasets import DatasetStore

    return DatasetStore(env.cache / "library.duckdb")


def _vec_store(env):
    from steering_core.vectors.store import VectorStore

    return VectorStore(env.cache)


def _preset_store(env):
    from steering_core.storage.presets import PresetStore

    return PresetStore(env.cache / "library.duckdb")


def _parse(data: bytes, name: str):
    from steering_core.datasets import parse_upload

    return parse_upload(data, name)


def _read_vec(data: bytes, name: str, d_model: int = 64):
    from steering_core.vectors.uploads import read_vector_bytes

    return read_vector_bytes(data, name, d_model=d_model)


def _save_dataset(env, name, pairs=(("a text", "b text"),), overwrite=False, **notes):
    from steering_core.datasets import ContrastiveDataset, Pair

    with _ds_store(env) as st:
        st.save(ContrastiveDataset(name, [Pair(p, n) for p, n in pairs], **notes), overwrite=overwrite)


def _save_vector(env, name, overwrite=False, **kw):
    from steering_core.vectors.vector import SteeringVector

    with _vec_store(env) as st:
        st.save(SteeringVector(name, 1, torch.ones(64), **kw), overwrite=overwrite)


def _save_preset(env, name, settings=None):
    st = _preset_store(env)
    try:
        st.save(name, settings if settings is not None else {"alpha": 2.0})
    finally:
        st.close()


def _side_by_side(env, prompt="Hello", alpha=1.0, **config):
    from steering_core import GenerationConfig
    from steering_core.measure.live import SideBySide, side_by_side

    cfg = GenerationConfig(**{"max_new_tokens": 2, **config})
    req = SideBySide(prompt=prompt, layer=1, vector=torch.ones(64) / 8, alpha=alpha, chat=False, n_samples=1,
                     config=cfg)
    return list(side_by_side(env.model, req))


def _sweep(env, **spec):
    from steering_core.measure.sweep import SweepSpec, run_sweep

    base = dict(prompts=("Hello",), alphas=(0.0, 2.0), samples=1, new_tokens=2, keywords=("the",))
    base.update(spec)
    return run_sweep(env.model, torch.ones(64) / 8, 1, SweepSpec(**base), sae=env.sae, with_dce=False)


def _with_pack(env):
    make_pack(env.cache / "pack", env.model)


def _pack(env):
    from steering_core.pack.reader import FeaturePack

    return FeaturePack(env.cache / "pack")


def _upload(at: AppTest, key: str, name: str, data: bytes) -> AppTest:
    return at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()


# -- pages -----------------------------------------------------------------------------------------

def _ds_upload(name: str, data: bytes):
    def act(env):
        at = _upload(env.page("dataset_editor.py"), "ds_upload", name, data)
        return at.button(key="ds_upload_go").click().run()
    act.page = "dataset_editor.py"
    return act


def _ds_save_as(name: str):
    def act(env):
        at = env.page("dataset_editor.py")
        at.selectbox(key="ds_open").set_value("saved: keep")
        at = at.button(key="ds_load").click().run()
        at.text_input(key="ds_name").set_value(name)
        at.checkbox(key="ds_overwrite").check()
        return at.button(key="ds_save").click().run()
    act.page = "dataset_editor.py"
    return act


def _ds_story(env):
    at = env.page("dataset_editor.py")
    at.text_area(key="gen_begin").set_value("  \n\t ")
    return at.button(key="gen_story").click().run()


_ds_story.page = "dataset_editor.py"


def _steer_upload(name: str, data_fn: Callable[[Env], bytes]):
    def act(env):
        at = env.page("steer.py")
        at = at.radio(key="vec_source").set_value("Upload (.safetensors / .npy / .pt)").run()
        return _upload(at, "vec_upload", name, data_fn(env))
    act.page = "steer.py"
    return act


def _steer_generate(prompt: str, feature: str = "3"):
    def act(env):
        at = env.page("steer.py")
        at.text_input(key="vec_feature").set_value(feature)
        at.text_area(key="prompt").set_value(prompt)
        at.number_input(key="max_tokens").set_value(3)
        at = at.run()
        return at.button(key="generate").click().run()
    act.page = "steer.py"
    return act


def _steer_feature(fid: str):
    def act(env):
        at = env.page("steer.py")
        return at.text_input(key="vec_feature").set_value(fid).run()
    act.page = "steer.py"
    return act


def _steer_preset(name: str):
    def act(env):
        at = env.page("steer.py")
        at.text_input(key="preset_name").set_value(name)
        return at.button(key="preset_save").click().run()
    act.page = "steer.py"
    return act


def _vec_import(name: str, data: bytes):
    def act(env):
        at = _upload(env.page("vectors.py"), "lib_upload", name, data)
        return at.button(key="lib_import").click().run()
    act.page = "vectors.py"
    return act


def _vec_fit_weights(weights: str):
    def act(env):
        at = env.page("vectors.py")
        at = at.selectbox(key="fit_method").set_value("sae_combo").run()
        at.text_input(key="fit_weights").set_value(weights)
        return at.button(key="fit_go").click().run()
    act.page = "vectors.py"
    return act


def _vec_combine_as(name: str):
    def act(env):
        at = env.page("vectors.py")
        at.selectbox(key="ar_a").set_value("keepv")
        at.text_input(key="ar_name").set_value(name)
        return at.button(key="ar_go").click().run()
    act.page = "vectors.py"
    return act


def _sweep_page(grid: str, keywords: str = "the, a"):
    def act(env):
        at = env.page("sweep.py")
        at = at.radio(key="sw_mode").set_value("Manual").run()
        at.text_input(key="sw_grid").set_value(grid)
        at.number_input(key="sw_samples").set_value(1)
        at.number_input(key="sw_tokens").set_value(2)
        at.text_input(key="sw_keywords").set_value(keywords)
        return at.button(key="sw_go").click().run()
    act.page = "sweep.py"
    return act


def _sweep_page_targets(ids: str):
    def act(env):
        at = env.page("sweep.py")
        at = at.radio(key="sw_mode").set_value("Manual").run()
        at = at.checkbox(key="sw_use_tf").check().run()
        at.text_input(key="sw_grid").set_value("0, 5")
        at.number_input(key="sw_samples").set_value(1)
        at.number_input(key="sw_tokens").set_value(2)
        at.text_input(key="sw_tf").set_value(ids)
        return at.button(key="sw_go").click().run()
    act.page = "sweep.py"
    return act


def _features_page_setup(env):
    from steering_core import load_model

    make_pack(env.cache / "pack", load_model("tiny"))  # the app's own tiny model
    env.monkeypatch.setenv("STEERING_SAE", str(env.cache / "pack" / "sae"))


def _features_search(query: str):
    def act(env):
        at = env.page("features.py")
        at.text_input(key="search_query").set_value(query)
        return at.run()
    act.page = "features.py"
    return act


def _home_picker(folder: str):
    def act(env):
        at = env.page("home.py")
        at = at.radio(key="picker_kind").set_value("Hugging Face folder").run()
        at.text_input(key="picker_hf").set_value(folder)
        return at.button(key="picker_load").click().run()
    act.page = "home.py"
    return act


# -- the CLI ---------------------------------------------------------------------------------------

def _config(edit: Callable[[str, Env], str]):
    """A tiny pack config (work and ship folders inside the case's folder), edited by the row."""
    def setup(env):
        from packs_util import write_config

        path = write_config(env.tmp)
        path.write_text(edit(path.read_text(), env))
        env.extra["config"] = path
    return setup


def _build(env):
    return ["build", str(env.extra["config"]), "--quiet"]


def _build_missing(env):
    return ["build", str(env.tmp / "no such config.toml"), "--quiet"]


# ================================================================================================
# The rows
# ================================================================================================

# -- malformed dataset uploads -----------------------------------------------------------------------
page("upload-page-csv-unclosed-quote", _ds_upload("pairs.csv", b'positive,negative\n"abc,def\nx,y\nu,v\n'),
     r"quote .* line 2 .* never closed")
lib("upload-lib-csv-quote-swallows-rows", lambda e: _parse(b'positive,negative\nabc,"def\nx,y\nu,v\n', "p.csv"),
    r"quote .* never closed")
lib("upload-lib-csv-missing-columns", lambda e: _parse(b"pos,neg\na,b\n", "p.csv"),
    r"columns positive and negative.*'pos', 'neg'")
lib("upload-lib-jsonl-bad-line", lambda e: _parse(b'{"positive": "a", "negative": "b"}\n{"positive": "c",\n',
                                                   "p.jsonl"), r"Line 2 of p\.jsonl is not valid JSON")
page("upload-page-json-not-a-list", _ds_upload("pairs.json", b'{"positive": "a", "negative": "b"}'),
     r"holds a JSON object; it must be a list")
page("upload-page-non-utf8", _ds_upload("pairs.csv", "positive,negative\ncafé,bar\n".encode("latin-1")),
     r"not UTF-8 text \(byte offset")
lib("upload-lib-utf16", lambda e: _parse("positive,negative\na,b\n".encode("utf-16"), "p.csv"), r"UTF-16")
lib("upload-lib-over-size-limit", lambda e: _parse(b"positive,negative\n" + b"some text,other text\n" * 260_000,
                                                    "p.csv"), r"uploads are at most 5 MB")
lib("upload-lib-empty-csv", lambda e: _parse(b"", "p.csv"), r"p\.csv is empty")
lib("upload-lib-empty-json", lambda e: _parse(b"", "p.json"), r"not valid JSON")
lib("upload-lib-json-nested-too-deep", lambda e: _parse(b"[" * 100_000 + b"]" * 100_000, "p.json"),
    r"nests JSON too deeply")
lib("upload-lib-wrong-extension", lambda e: _parse(b"positive,negative\na,b\n", "pairs.xlsx"), r"extension \.xlsx")
lib("upload-lib-workspace-json-nested-too-deep",
    lambda e: usernotes.Workspace.from_json(b"[" * 100_000 + b"]" * 100_000, _pack(e)),
    r"JSON|deep|nest|workspace", setup=_with_pack)

# -- wrong tensors, disguised pickles, garbage files -------------------------------------------------
page("tensor-page-npy-2d", _steer_upload("two.npy", lambda e: npy_bytes(np.ones((2, 64), np.float32))),
     r"holds 2 vectors; upload a single vector")
lib("tensor-lib-npy-0d", lambda e: _read_vec(npy_bytes(np.float32(1.0)), "s.npy"), r"shape \(\)")
lib("tensor-lib-wrong-d-model", lambda e: _read_vec(npy_bytes(np.ones(32, np.float32)), "v.npy"),
    r"length 32, but the model's d_model is 64")
lib("tensor-lib-int-safetensors", lambda e: vm.from_safetensors_bytes(
    st_bytes({"direction": torch.ones(64, dtype=torch.int32)}, {"layer": "1"})), r"dtype torch\.int32")
lib("tensor-lib-bool-npy", lambda e: _read_vec(npy_bytes(np.ones(64, bool)), "v.npy"), r"dtype bool")
lib("tensor-lib-complex-pt", lambda e: _read_vec(pt_bytes(torch.ones(64, dtype=torch.complex64)), "v.pt"),
    r"complex64; a real-valued vector")
page("tensor-page-pickle-as-pt", _steer_upload("vector.pt", lambda e: pickle.dumps(_Payload(e.marker))),
     r"not a tensor-only \.pt file .* refused unread")
lib("tensor-lib-torch-save-payload-pt", lambda e: _read_vec(pt_bytes({"v": _Payload(e.marker)}), "v.pt"),
    r"not a tensor-only \.pt file")
lib("tensor-lib-pickle-in-npy", lambda e: _read_vec(npy_bytes(np.array([_Payload(e.marker)], dtype=object)),
                                                    "v.npy"), r"Python objects.*refused unread")
lib("tensor-lib-pickle-as-safetensors-import",
    lambda e: vm.from_safetensors_bytes(pickle.dumps(_Payload(e.marker))),
    r"pickle .* never loaded")
page("tensor-page-garbage-safetensors-import",
     _vec_import("v.safetensors", b"\x10\x00\x00\x00\xff\xff\xff\xff" + b"garbage!" * 8), r"not a safetensors file")
page("tensor-page-garbage-gguf-import", _vec_import("v.gguf", b"GGUF" + bytes(range(256)) * 2),
     r"not a readable GGUF file")
lib("tensor-lib-gguf-not-gguf", lambda e: vm.import_gguf(b"PK\x03\x04zip"), r"pickle|not a GGUF")
lib("tensor-lib-safetensors-meta-nested-too-deep",
    lambda e: vm.from_safetensors_bytes(raw_safetensors({"layer": "1", "meta": "[" * 50_000 + "]" * 50_000})),
    r"meta|JSON|deep|nest")
lib("control-lib-vector-with-384-byte-header-saves-and-loads",
    lambda e: _roundtrip_saved(e, saved_vector_with_header(384)), "", control=True)


def _roundtrip_saved(env, vec):
    with _vec_store(env) as st:
        st.save(vec)
        try:
            assert st.load(vec.name).name == vec.name
        finally:
            st.delete(vec.name)


# -- NaN and inf wherever a number is read -------------------------------------------------------------
lib("nan-lib-alpha", lambda e: _side_by_side(e, alpha=float("nan")), r"alpha must be a finite number")
lib("nan-lib-alpha-inf", lambda e: _side_by_side(e, alpha=float("-inf")), r"alpha must be a finite number")
lib("nan-lib-temperature", lambda e: _side_by_side(e, temperature=float("nan")), r"temperature must be a finite")
lib("nan-lib-top-p", lambda e: _side_by_side(e, top_p=float("nan")), r"top_p must be in \(0, 1\]")
lib("nan-lib-top-k-zero", lambda e: _side_by_side(e, top_k=0), r"top_k must be a positive integer")
page("nan-page-feature-weights", _vec_fit_weights("12:nan"), r"weights finite numbers")
lib("nan-lib-feature-weights-inf", lambda e: methods.parse_feature_weights("3:1, 12:inf"), r"finite")
page("nan-page-sweep-grid", _sweep_page("0, nan"), r"α values must be finite")
lib("nan-lib-sweep-grid-inf", lambda e: _sweep(e, alphas=(0.0, float("inf"))), r"must be finite")
lib("nan-lib-auto-alpha-target", lambda e: alpha_mod.auto_alpha(e.model, 1, torch.ones(64), target=float("nan")),
    r"ΔCE target must be a positive number")
page("nan-page-tensor-values", _steer_upload("v.npy", lambda e: npy_bytes(np.full(64, np.nan, np.float32))),
     r"NaN or infinite")
lib("nan-lib-tensor-inf-pt", lambda e: _read_vec(pt_bytes(torch.full((64,), float("inf"))), "v.pt"),
    r"NaN or infinite")
lib("nan-lib-combine-weight", lambda e: vm.combine([(_vec_store(e).load("keepv"), float("nan"))], "bad"),
    r"weight .* must be a finite number")
lib("nan-lib-preset-value", lambda e: _save_preset(e, "keep", {"alpha": float("nan")}), r"cannot be stored")
cli("nan-cli-config-value", _build, r"\[alpha\] target_dce must be a finite number",
    setup=_config(lambda t, e: t.replace("[effects]", "[alpha]\ntarget_dce = nan\n[effects]")))
cli("nan-cli-config-inf", _build, r"dense_threshold must be a finite number",
    setup=_config(lambda t, e: "dense_threshold = inf\n" + t))

# -- unknown ids and names ------------------------------------------------------------------------------
page("unknown-page-feature-id-beyond-d-sae", _steer_feature("99999"), r"Feature 99999 does not exist")
lib("unknown-lib-negative-feature-id", lambda e: live.sae_direction(e.model, e.sae, "-1"), r"Feature -1 does not exist")
lib("unknown-lib-fit-feature-beyond-d-sae", lambda e: _fit(e, "sae_combo", weights={99_999: 1.0}),
    r"Feature 99999 does not exist")
page("unknown-page-features-search-negative-id", _features_search("-1"), r"Feature -1 does not exist",
     setup=_features_page_setup)
lib("unknown-lib-saved-vector", lambda e: _vec_store(e).load("no such vector"), r"No saved vector named")
lib("unknown-lib-saved-dataset", lambda e: _ds_store(e).load("no such dataset"), r"No saved dataset is named")
lib("unknown-lib-preset", lambda e: _preset_store(e).load("no such preset"), r"No preset named")
lib("unknown-lib-example-dataset", lambda e: dsm.load_example("nope"), r"No example dataset is named")
lib("unknown-lib-sweep-target-feature-beyond-d-sae",
    lambda e: _sweep(e, keywords=None, target_features=(e.sae.d_sae + 5,), behaviour="target"),
    r"[Ff]eature|does not exist|out of range|d_sae")
page("unknown-page-sweep-target-feature-beyond-d-sae", _sweep_page_targets("99999"),
     r"[Ff]eature|does not exist|out of range|d_sae")
page("unknown-page-sweep-target-feature-not-a-number", _sweep_page_targets("twelve"), r"[Ff]eature")
lib("unknown-lib-sweep-negative-target-feature",
    lambda e: _sweep(e, keywords=None, target_features=(-1,), behaviour="target"),
    r"[Ff]eature|does not exist|negative")


def _fit(env, method, weights=None, pairs=None, name="fitted"):
    from steering_core.datasets import ContrastiveDataset, Pair
    from steering_core.vectors.fitting import FitRequest, fit_dataset
    from steering_core.vectors.methods import FitContext

    ds = ContrastiveDataset("code-built", [Pair(p, n) for p, n in (pairs or [("I love weddings", "I love meetings"),
                                                                                ("The bride", "The clerk")])])
    return fit_dataset(env.model, FitRequest(ds, 1, method, "last", name),
                       FitContext(sae=env.sae, feature_weights=weights))


# -- empty and whitespace-only text ------------------------------------------------------------------------
lib("empty-lib-whitespace-pairs-jsonl", lambda e: _parse(b'{"positive": "ok", "negative": " \\t\\n "}\n', "p.jsonl"),
    r"Empty or whitespace-only texts.*line 1")
lib("empty-lib-fit-code-built-dataset", lambda e: _fit(e, "caa", pairs=[("   ", "a text"), ("b", "c")]),
    r"Empty or whitespace-only texts")
page("empty-page-dataset-name", _ds_save_as("   "), r"Give the dataset a name")
page("empty-page-story-beginning", _ds_story, r"shared beginning")
lib("empty-lib-vector-name", lambda e: _save_vector(e, " \t "), r"needs a name")
lib("empty-lib-preset-name", lambda e: _save_preset(e, "   "), r"Give the preset a name")
page("empty-page-prompt", _steer_generate(" \n\t "), r"The prompt is empty")
lib("empty-lib-sweep-prompts", lambda e: _sweep(e, prompts=("  ", "\n")), r"at least one prompt")
page("empty-page-keywords", _sweep_page("0, 5", keywords=" ,  , "), r"keyword list is empty")
lib("empty-lib-concept", lambda e: _sweep(e, keywords=None, concept="   ", behaviour="similarity"),
    r"concept description is empty")
lib("empty-lib-judge-criterion", lambda e: _sweep(e, judge_criterion=" \t", behaviour="judge"),
    r"judge criterion is empty")
lib("empty-lib-next-token-prompt",
    lambda e: nexttoken.next_token_curves(e.model, "   ", torch.ones(64), 1, [0.0, 1.0]), r"prompt is empty")
lib("empty-lib-search-label", lambda e: search.search_label(_pack(e), "  "),
    r"search box is empty", setup=_with_pack)

# -- Unicode edge cases ----------------------------------------------------------------------------------------
lib("unicode-lib-nul-in-dataset-name", lambda e: _save_dataset(e, "bad\x00name"), r"remove '\\x00'")
lib("unicode-lib-lone-surrogate-in-vector-name", lambda e: _save_vector(e, "bad\ud800name"), r"remove '\\ud800'")
lib("unicode-lib-rtl-override-in-preset-name", lambda e: _save_preset(e, "evil\u202etxt.exe"), r"remove '\\u202e'")
lib("unicode-lib-zero-width-in-dataset-name", lambda e: _save_dataset(e, "ke\u200bep", overwrite=True),
    r"remove '\\u200b'")
lib("unicode-lib-lone-surrogate-in-prompt", lambda e: _side_by_side(e, prompt="Hello \ud800 there"),
    r"cannot be encoded")
lib("unicode-lib-lone-surrogate-in-sweep-prompt", lambda e: _sweep(e, prompts=("Hi \udcff",)), r"cannot be encoded")
lib("unicode-lib-lone-surrogate-in-dataset-description",
    lambda e: _save_dataset(e, "keep", overwrite=True, description="notes \ud83d"), r"cannot be stored")
lib("unicode-lib-lone-surrogate-in-search", lambda e: search.search_label(_pack(e), "wed\ud800"),
    r"cannot be encoded", setup=_with_pack)
lib("unicode-lib-lone-surrogate-in-feature-label",
    lambda e: usernotes.UserNotes(e.cache / "user.duckdb").set_label(_pack(e), 1, "label \ud800"),
    r"surrogate|cannot be|character", setup=_with_pack)
lib("unicode-lib-lone-surrogate-in-vector-metadata", lambda e: _save_vector(e, "fine name", dataset="d\ud800"),
    r"surrogate|cannot be|character")
page("control-page-emoji-prompt", _steer_generate("Tell me about 🎉 and 🦄 at the party"), "", control=True)

# -- path-like names for every kind of saved object ----------------------------------------------------------
_SAVERS = {"dataset": lambda e, n: _save_dataset(e, n, overwrite=True),
           "vector": lambda e, n: _save_vector(e, n, overwrite=True),
           "preset": lambda e, n: _save_preset(e, n)}
for _kind, _saver in _SAVERS.items():
    for _label, _name, _why in (("dotdot-slash", "../x", r"cannot contain / or \\"),
                                ("etc-passwd", "/etc/passwd", r"cannot contain / or \\"),
                                ("a-slash-b", "a/b", r"cannot contain / or \\"),
                                ("dotdot-backslash", "..\\x", r"cannot contain / or \\"),
                                ("dot", ".", r"cannot start with a dot")):
        lib(f"path-lib-{_kind}-{_label}", lambda e, s=_saver, n=_name: s(e, n), rf"{_kind} name {_why}")
page("path-page-dataset-backslash", _ds_save_as("..\\keep"), r"cannot contain / or \\")
page("path-page-vector-combine-name", _vec_combine_as("../keepv"), r"cannot contain / or \\")
page("path-page-preset-name", _steer_preset("/etc/passwd"), r"cannot contain / or \\")
page("path-page-model-folder", _home_picker("/etc/passwd"), r"does not exist")

# -- the pack CLI -----------------------------------------------------------------------------------------------
cli("cli-missing-config", _build_missing, r"No pack config at")
cli("cli-negative-value", _build, r"\[sae_train\] d_sae cannot be negative",
    setup=_config(lambda t, e: t.replace("d_sae = 40", "d_sae = -40")))
cli("cli-unknown-key", _build, r"Unknown setting\(s\) \['top_effectz'\]",
    setup=_config(lambda t, e: t.replace("top_effects = 8", "top_effectz = 8")))
cli("cli-text-for-a-number", _build, r"seed must be a whole number",
    setup=_config(lambda t, e: 'seed = "forty-two"\n' + t))
cli("cli-bad-hook", _build, r"Hook 'blocks\.9\.hook_resid_post' does not exist",
    setup=_config(lambda t, e: t.replace("layer = 1", 'hook = "blocks.9.hook_resid_post"')))
cli("cli-path-as-pack-name", _build, r"pack name cannot contain / or \\",
    # no out_dir: the work folder would be cache/build/<name>, i.e. the absolute path itself
    setup=_config(lambda t, e: re.sub(r'out_dir = ".*"\n', "", t).replace(
        'name = "tiny"', f'name = "{(e.tmp / "escaped").as_posix()}"')))


# ================================================================================================
# The test
# ================================================================================================

N_CONTROLS = sum(c.control for c in CASES)
N_XFAIL = sum(bool(c.xfail) for c in CASES)


@pytest.fixture(scope="module")
def tiny_sae_(tiny_hf):
    from steering_core.model.saes import load_sae

    return load_sae("tiny", tiny_hf)


@pytest.fixture(scope="module")
def library_template(tmp_path_factory):
    """The prepared library, built once and copied into every case's cache (a fresh build per
    case would cost a third of the suite's time)."""
    cache = tmp_path_factory.mktemp("library") / "cache"
    prepare_library(cache)
    return cache


def _fresh_env(tmp: Path, template: Path, monkeypatch=None, model=None, sae=None) -> Env:
    import shutil

    shutil.copytree(template, tmp / "cache")
    return Env(tmp, tmp / "cache", model, sae, monkeypatch)


@pytest.fixture(scope="module", autouse=True)
def cli_runs(tmp_path_factory, library_template):
    """The CLI rows run one after another in a background thread while the in-process rows run:
    each CLI run is mostly a new Python importing torch, and this machine has a second core. Per
    row: its folder, its snapshot taken before the run, and (once done) the finished process."""
    import threading

    jobs = []
    for case in CASES:
        if case.where != "cli":
            continue
        env = _fresh_env(tmp_path_factory.mktemp(case.id), library_template)
        if case.setup is not None:
            case.setup(env)
        proc_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    "STEERING_CACHE_DIR": str(env.cache)}
        jobs.append((case, env, snapshot(env.tmp), proc_env))
    results: dict[str, tuple] = {}
    finished = {case.id: threading.Event() for case, *_ in jobs}

    def work() -> None:
        for case, env, before, proc_env in jobs:
            try:
                res = subprocess.run([sys.executable, "-m", "steering_core.pack", *case.act(env)], cwd=ROOT,
                                     env=proc_env, capture_output=True, text=True, timeout=300)
            except Exception as exc:  # noqa: BLE001 - reported by the row's test
                res = exc
            results[case.id] = (env, before, res)
            finished[case.id].set()

    thread = threading.Thread(target=work, name="hostile-cli", daemon=True)
    thread.start()

    def get(case_id: str):
        assert finished[case_id].wait(600), "the CLI run did not finish"
        env, before, res = results[case_id]
        if isinstance(res, Exception):
            raise res
        return env, before, res

    yield get
    thread.join(600)


def _messages(at: AppTest) -> list[str]:
    return [str(e.value) for e in at.error] + [str(w.value) for w in at.warning]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                                               if c.xfail else []) for c in CASES])
def test_hostile_input(case: Case, request, tmp_path, monkeypatch, library_template):
    if case.where == "cli":
        env, before, res = request.getfixturevalue("cli_runs")(case.id)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode != 0, res.stderr[-2000:]
        assert "Traceback" not in res.stderr, res.stderr[-2000:]
        assert len(lines) == 1, res.stderr[-2000:]
        assert re.search(case.match, lines[0]), lines[0]
    else:
        request.getfixturevalue("one_thread")
        model, sae = request.getfixturevalue("tiny_hf"), request.getfixturevalue("tiny_sae_")
        env = _fresh_env(tmp_path, library_template, monkeypatch, model, sae)
        monkeypatch.setenv("STEERING_CACHE_DIR", str(env.cache))
        monkeypatch.setenv("STEERING_MODEL", "tiny")
        monkeypatch.setenv("STEERING_SAE", "tiny")
        if case.setup is not None:
            case.setup(env)
        before = snapshot(env.tmp)
        if case.where == "lib":
            if case.control:
                case.act(env)
            else:
                with pytest.raises(SteeringCoreError, match=case.match):
                    case.act(env)
        else:
            at = case.act(env)
            assert not at.exception, [e.value for e in at.exception]
            shown = _messages(at)
            if case.control:
                assert not shown, shown
                assert "steer_last" in at.session_state and all(at.session_state["steer_last"]["steered"])
            else:
                assert any(re.search(case.match, m) for m in shown), shown

    assert not env.marker.exists(), "a pickle payload was executed"
    assert snapshot(env.tmp) == before, "the library or cache changed"


def test_the_table_covers_every_family_and_place():
    """The suite's own contract: enough rows, every page and the CLI, each family present."""
    hostile = [c for c in CASES if not c.control]
    assert len(hostile) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.where == "page" and not c.xfail for c in hostile) >= 6
    assert sum(c.where == "cli" for c in hostile) >= 3
    families = {c.id.split("-")[0] for c in hostile}
    assert {"upload", "tensor", "nan", "unknown", "empty", "unicode", "path", "cli"} <= families
    driven = {c.act.page for c in hostile if c.where == "page"}
    assert driven == {"home.py", "dataset_editor.py", "steer.py", "vectors.py", "sweep.py", "features.py"}
