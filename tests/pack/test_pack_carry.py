"""A build that continues on another machine (steering_core/pack/carry.py): its progress folder
carries the measured effects chunks, the twin rows, the α windows and the control, and a build
started in an empty work folder ends with the same tables as one that never moved."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from packs_util import run_cli, write_config
from test_pack import tables

from steering_core.errors import SteeringError
from steering_core.pack.carry import segments, to_stored
from steering_core.storage.db import connect

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)


def test_a_build_moved_to_an_empty_work_folder_ends_with_the_same_tables(tiny_pack_build, tmp_path):
    progress = tmp_path / "progress"
    cfg = write_config(tmp_path, progress=str(progress), progress_every=1)
    res = run_cli(["build", str(cfg), "--quiet"], {"STEERING_PACK_CRASH_AT": "effects:2:after_commit"})
    assert res.returncode == -9, res.stderr[-2000:]
    # chunks 0 and 1 were saved as they were committed; chunk 2 was committed but the build died first
    assert sorted(c for s in segments(progress) for c in s.chunks) == [0, 1]
    res = run_cli(["save-progress", str(cfg)])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "saved 1 new effects chunks" in res.stdout
    assert sorted(c for s in segments(progress) for c in s.chunks) == [0, 1, 2]
    assert json.loads((progress / "progress.json").read_text())["precision"] == "fp32"
    assert {"corpus.npz", "alpha_ref.npy", "baseline_rows.npy", "baseline.npy", "control_effects.npy", "control_done.json"} <= {
        p.name for p in progress.iterdir()}
    # a new machine: the work folder is gone, the committed progress folder is all that is left
    shutil.rmtree(tmp_path / "build")
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    log = (tmp_path / "build" / "build.log").read_text()
    assert "progress: restored corpus.npz, alpha_ref.npy, baseline_rows.npy, baseline.npy, control_effects.npy" in log
    assert "measuring the unsteered baseline (baseline_rows)" not in log  # the twins came with the progress
    a = tables(tiny_pack_build / "pack" / "pack.duckdb")
    b = tables(tmp_path / "pack" / "pack.duckdb")
    for key in ("features", "effects", "generic", "neighbors", "snippets", "meta"):
        assert a[key] == b[key], key
    assert "effects_seconds_per_feature" in dict(connect(tmp_path / "pack" / "pack.duckdb", read_only=True).execute(
        "SELECT key, value FROM meta").fetchall())


def test_carried_chunks_are_committed_as_saved_not_measured_again(tiny_pack_build, tmp_path):
    """Plant a value in a saved segment: the rebuilt tables hold the planted value, so the chunk was
    read from the progress folder, not re-measured."""
    progress = tmp_path / "progress"
    cfg = write_config(tmp_path, progress=str(progress), progress_every=1)
    res = run_cli(["build", str(cfg), "--quiet", "--until", "effects"])
    assert res.returncode == 0, res.stderr[-2000:]
    seg = segments(progress)[0]
    with np.load(seg.path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    assert arrays["effect"].dtype == np.float16 and arrays["chunks"][0] == 0
    arrays["effect"][0, 3] = 1234.0  # source feature 0, target 3
    np.savez_compressed(seg.path, **arrays)
    shutil.rmtree(tmp_path / "build")
    res = run_cli(["build", str(cfg), "--quiet", "--until", "effects"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert np.load(tmp_path / "build" / "effects.npy")[0, 3] == 1234.0
    con = connect(tmp_path / "build" / "build.duckdb", read_only=True)
    try:
        top = con.execute("SELECT target_feature, effect FROM feature_effects WHERE source_feature = 0 AND rank = 0"
                          ).fetchone()
    finally:
        con.close()
    assert top == (3, 1234.0)
    # and every effect the build stores is already at the stored (float16) precision
    mat = np.load(tmp_path / "build" / "effects.npy")
    np.testing.assert_array_equal(mat, mat.astype(np.float16).astype(np.float32))


def test_stored_precision_refuses_values_float16_cannot_hold():
    x = np.array([0.1, -2.5e-3, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(to_stored(x, "effect"), x.astype(np.float16).astype(np.float32))
    with pytest.raises(SteeringError, match="not finite or exceeds"):
        to_stored(np.array([1e6], dtype=np.float32), "effect")
    with pytest.raises(SteeringError, match="not finite"):
        to_stored(np.array([np.nan], dtype=np.float32), "standard error")


def test_save_progress_needs_a_progress_folder_and_a_build(tmp_path):
    res = run_cli(["save-progress", str(write_config(tmp_path))])
    assert res.returncode == 2 and "has no progress folder" in res.stderr
    res = run_cli(["save-progress", str(write_config(tmp_path, progress=str(tmp_path / "p")))])
    assert res.returncode == 2 and "There is no build" in res.stderr
    res = run_cli(["build", str(write_config(tmp_path, progress_every=0))])
    assert res.returncode == 2 and "progress_every must be at least 1" in res.stderr


def test_progress_from_another_precision_is_refused_not_mixed(tiny_pack_build, tmp_path):
    progress = tmp_path / "progress"
    progress.mkdir()
    con = connect(tiny_pack_build / "pack" / "pack.duckdb", read_only=True)
    meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('model_id', 'hook_point')").fetchall())
    con.close()
    (progress / "progress.json").write_text(json.dumps({**meta, "precision": "bf16"}))
    cfg = write_config(tmp_path, progress=str(progress))
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 2, res.stderr[-2000:]
    assert "was measured with precision 'bf16'; this build has 'fp32'" in res.stderr
    assert not (tmp_path / "build" / "corpus.npz").exists()  # nothing was computed


def test_progress_from_another_effects_budget_is_refused_not_mixed(tiny_pack_build, tmp_path):
    """Found before the embedded pack's budget was raised: progress.json named only the model, hook
    and precision, so chunks of 3 rollouts per prompt would have joined a build of 2."""
    from steering_core.pack.carry import SETTINGS
    from steering_core.pack.config import load_config

    progress = tmp_path / "progress"
    progress.mkdir()
    cfg = write_config(tmp_path, progress=str(progress))
    con = connect(tiny_pack_build / "pack" / "pack.duckdb", read_only=True)
    meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('model_id', 'hook_point', 'precision')").fetchall())
    con.close()
    settings = {k: v for k, v in json.loads(json.dumps(load_config(cfg).to_dict())).items() if k in SETTINGS}
    assert settings["effects"]["rollouts_per_prompt"] == 2
    settings["effects"] = {**settings["effects"], "rollouts_per_prompt": 3, "baseline_rollouts_per_prompt": 3}
    (progress / "progress.json").write_text(json.dumps({**meta, "settings": settings}))
    (progress / "alpha_ref.npy").write_bytes(b"not restored")
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 2, res.stderr[-2000:]
    assert "was measured with other effects settings than this config" in res.stderr
    assert '"rollouts_per_prompt": 3' in res.stderr
    assert not (tmp_path / "build" / "alpha_ref.npy").exists()  # nothing was restored or computed
    assert not (tmp_path / "build" / "corpus.npz").exists()
