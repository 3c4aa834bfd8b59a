"""Crash safety: ``kill -9`` during a vector save, a label edit, a sweep and an on-demand effect
measurement leaves every DuckDB file consistent, and the interrupted job resumes or is cleanly
absent. (A pack build killed mid-way is covered in test_pack.py.) Each case kills a real child
process, either at a named crash point (``STEERING_CRASH_AT``, the worst moments) or from outside
at an arbitrary moment of a write loop; then a fresh process checks what is on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)

ROOT = Path(__file__).resolve().parent.parent

DRIVER = textwrap.dedent(r'''
    import json, sys, torch
    torch.set_num_threads(1)
    op, root = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}

    def vec(seed, d=64):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(d, generator=g)

    if op == "vector_save":
        from steering_core.vectors import SteeringVector, VectorStore
        with VectorStore(root) as store:
            store.save(SteeringVector("v", 1, vec(args["seed"]), method="caa"), overwrite=True)
        print("saved", flush=True)
    elif op == "vector_save_loop":
        from steering_core.vectors import SteeringVector, VectorStore
        with VectorStore(root) as store:
            for i in range(10_000):
                store.save(SteeringVector("v", 1, vec(i), method="caa", meta={"version": i}), overwrite=True)
                print(i, flush=True)
    elif op in ("label_edit", "label_loop"):
        from steering_core.pack.reader import FeaturePack
        from steering_core.browse.usernotes import UserNotes
        pack = FeaturePack(args["pack"])
        with UserNotes(f"{root}/notes.duckdb") as notes:
            if op == "label_edit":
                notes.apply(pack, {f: args["label"] for f in args["ids"]}, {})
                print("saved", flush=True)
            else:
                for i in range(10_000):
                    notes.apply(pack, {f: f"v{i}" for f in args["ids"]}, {})
                    print(i, flush=True)
    elif op == "sweep":
        from steering_core.model.tiny import tiny_model
        from steering_core.measure.sweep import SweepCache, SweepSpec, run_sweep
        model = tiny_model("hf", n_layers=3, d_model=64, seed=0)
        spec = SweepSpec(prompts=("hello", "the weather"), alphas=(-4.0, 4.0), samples=2, new_tokens=5,
                         chat=False, keywords=("the", "a"))
        cache = SweepCache(f"{root}/library.duckdb")
        pts = run_sweep(model, vec(5), 1, spec, cache=cache, with_dce=False)
        print(json.dumps([[p.alpha, p.scores] for p in pts]), flush=True)
    elif op == "measure":
        from steering_core import load_model
        from steering_core.pack.reader import FeaturePack
        from steering_core.model.saes import load_sae_from_disk
        from steering_core.measure.vector_effects import EffectCache, measure
        pack = FeaturePack(args["pack"])
        model = load_model("tiny")
        sae = load_sae_from_disk(pack.sae_dir, model)
        layer = int(pack.meta_json("layer", 1))
        m = measure(model, sae, pack, vec(7, model.d_model), layer, cache=EffectCache(f"{root}/library.duckdb"))
        print(json.dumps({"from_cache": m.from_cache, "alpha": m.alpha, "effects": m.effects.tolist()}), flush=True)
''')


def run(op, root, crash=None, **args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("STEERING_CRASH_AT", None)
    if crash:
        env["STEERING_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-c", DRIVER, op, str(root), json.dumps(args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def killed(res):
    return res.returncode == -signal.SIGKILL


def vec(seed, d=64):
    import torch

    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def vector_files(root):
    return sorted(p.name for p in (root / "vectors").iterdir())


# --- vector save ---------------------------------------------------------------------------------


@pytest.mark.parametrize("point, survivor", [
    ("vector_save:file_written", "old"),    # new file on disk, row not yet written
    ("vector_save:before_commit", "old"),   # row written inside an open transaction
    ("vector_save:committed", "new"),       # committed, the replaced file not yet removed
])
def test_kill_during_a_vector_overwrite_keeps_one_whole_vector(tmp_path, point, survivor):
    import torch

    from steering_core.vectors.store import VectorStore

    assert run("vector_save", tmp_path, seed=1).returncode == 0
    res = run("vector_save", tmp_path, crash=point, seed=2)
    assert killed(res), res.stderr[-2000:]
    assert len(vector_files(tmp_path)) == 2  # the kill left a file behind ...
    with VectorStore(tmp_path) as store:  # ... which reopening removes
        assert store.names() == ["v"]
        got = store.load("v")
        assert torch.equal(got.direction, vec(1 if survivor == "old" else 2))
        assert got.norm == pytest.approx(float(vec(1 if survivor == "old" else 2).norm()))
        assert len(vector_files(tmp_path)) == 1


def test_kill_during_a_first_save_leaves_it_cleanly_absent(tmp_path):
    from steering_core.vectors.store import VectorStore

    res = run("vector_save", tmp_path, crash="vector_save:before_commit", seed=1)
    assert killed(res)
    with VectorStore(tmp_path) as store:
        assert store.names() == [] and vector_files(tmp_path) == []


def test_kill_at_an_arbitrary_moment_of_a_save_loop(tmp_path):
    """From outside, with no crash point: whatever moment the kill lands on, the library holds
    one whole version, the last one reported saved or the one after it."""
    import torch

    from steering_core.vectors.store import VectorStore

    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "vector_save_loop", str(tmp_path)], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, text=True)
    last = -1
    try:
        while last < 25:  # a few dozen saves in, mid-write
            line = proc.stdout.readline()
            assert line, "the save loop died on its own"
            last = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout:  # saves reported between our decision and the kill
            last = int(line)
    finally:
        proc.kill()
        proc.stdout.close()
    with VectorStore(tmp_path) as store:
        got = store.load("v")
        version = got.meta["version"]
        assert version in (last, last + 1)
        assert torch.equal(got.direction, vec(version))
        assert len(vector_files(tmp_path)) == 1


# --- label edit ----------------------------------------------------------------------------------


def _labels(root, pack_dir, ids):
    from steering_core.browse.usernotes import UserNotes
    from steering_core.pack.reader import FeaturePack

    pack = FeaturePack(pack_dir)
    try:
        with UserNotes(root / "notes.duckdb") as notes:
            return [notes.get(pack, f).label for f in ids]
    finally:
        pack.close()


def test_kill_in_the_middle_of_a_label_edit_keeps_every_old_label(tmp_path, tiny_pack_build):
    pack = str(tiny_pack_build / "pack")
    ids = [0, 1, 2]
    assert run("label_edit", tmp_path, pack=pack, ids=ids, label="old").returncode == 0
    res = run("label_edit", tmp_path, crash="label_edit:mid_transaction", pack=pack, ids=ids, label="new")
    assert killed(res), res.stderr[-2000:]
    assert _labels(tmp_path, pack, ids) == ["old"] * 3  # not one "new" and two "old"
    assert run("label_edit", tmp_path, pack=pack, ids=ids, label="new").returncode == 0  # and the file still writes
    assert _labels(tmp_path, pack, ids) == ["new"] * 3


def test_kill_at_an_arbitrary_moment_of_label_edits(tmp_path, tiny_pack_build):
    pack = str(tiny_pack_build / "pack")
    ids = [0, 1, 2, 3]
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "label_loop", str(tmp_path),
                             json.dumps({"pack": pack, "ids": ids})], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, text=True)
    last = -1
    try:
        while last < 25:
            line = proc.stdout.readline()
            assert line, "the label loop died on its own"
            last = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout:
            last = int(line)
    finally:
        proc.kill()
        proc.stdout.close()
    labels = _labels(tmp_path, pack, ids)
    assert len(set(labels)) == 1, labels  # one edit, all or nothing
    assert labels[0] in (f"v{last}", f"v{last + 1}")


# --- sweep ---------------------------------------------------------------------------------------


def test_killed_sweep_keeps_its_finished_points_and_resumes_to_the_same_result(tmp_path):
    from steering_core.measure.sweep import SweepCache

    clean = run("sweep", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = json.loads(clean.stdout.strip().splitlines()[-1])
    work = tmp_path / "work"
    res = run("sweep", work, crash="sweep:point_written")
    assert killed(res), res.stderr[-2000:]
    cache = SweepCache(work / "library.duckdb")
    try:
        stored = cache.con.execute("SELECT alpha FROM sweep_points").fetchall()
    finally:
        cache.close()
    assert [a for (a,) in stored] == [expected[0][0]]  # the first α, whole; nothing of the second
    resumed = run("sweep", work)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == expected


# --- on-demand effect measurement ----------------------------------------------------------------


def test_killed_measurement_is_cleanly_absent_then_measures_the_same(tmp_path, tiny_pack_build):
    from steering_core.measure.vector_effects import EffectCache

    pack = str(tiny_pack_build / "pack")
    res = run("measure", tmp_path, crash="vector_effects:measured", pack=pack)
    assert killed(res), res.stderr[-2000:]
    cache = EffectCache(tmp_path / "library.duckdb")
    try:
        assert cache.con.execute("SELECT count(*) FROM vector_effect_cache").fetchone()[0] == 0
    finally:
        cache.close()
    first = run("measure", tmp_path, pack=pack)
    assert first.returncode == 0, first.stderr[-2000:]
    a = json.loads(first.stdout.strip().splitlines()[-1])
    again = json.loads(run("measure", tmp_path, pack=pack).stdout.strip().splitlines()[-1])
    assert not a["from_cache"] and again["from_cache"]
    np.testing.assert_allclose(again["effects"], a["effects"], rtol=1e-6, atol=1e-6)


# --- two processes, one cache --------------------------------------------------------------------


def test_a_second_app_on_a_held_cache_gets_a_sentence_and_the_file_survives(app_env):
    """Another process (a second app, a build) holds library.duckdb: the pages say so instead of
    showing a driver error, and the holder's data is intact afterwards."""
    from streamlit.testing.v1 import AppTest

    from steering_core.datasets import ContrastiveDataset, DatasetStore, Pair

    store = DatasetStore(app_env / "library.duckdb")
    store.save(ContrastiveDataset("mine", [Pair("a wedding", "a funeral"), Pair("the bride", "the mourner")]))
    store.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, duckdb\ncon = duckdb.connect(sys.argv[1])\n"
         "print('ready', flush=True)\ntime.sleep(300)\n", str(app_env / "library.duckdb")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        for page in ("pages/dataset_editor.py", "pages/vectors.py"):
            at = AppTest.from_file(str(ROOT / page), default_timeout=120)
            at.run()
            assert not at.exception, (page, [e.value for e in at.exception])
            errors = " ".join(e.value for e in at.error)
            assert "another process" in errors and "safe" in errors, (page, errors)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            store = DatasetStore(app_env / "library.duckdb")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        assert [p.positive for p in store.load("mine").pairs] == ["a wedding", "the bride"]
    finally:
        store.close()
