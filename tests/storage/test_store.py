"""DuckDB storage (steering_core.storage.db): friendly errors for files it cannot open, and
all-or-nothing writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import duckdb
import pytest

from steering_core.errors import SteeringCoreError
from steering_core.pack.tables import ensure_schema, get_meta, mark_stage, set_meta, stage_done
from steering_core.storage.db import StoreError, connect, transaction


@pytest.fixture()
def con(tmp_path):
    c = connect(tmp_path / "pack.duckdb")
    ensure_schema(c)
    yield c
    c.close()


def _count(c, table="features") -> int:
    return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# ----------------------------------------------------------------------------------------------
# connect
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    os.urandom(4096),
    b"feature_id,label\n0,cats\n1,dogs\n" * 20,
    b"\x00" * 8192,
    b"hi\n",  # shorter than the 12-byte header check
], ids=["random", "csv-text", "zeros", "tiny-text"])
def test_connect_rejects_non_duckdb_file(tmp_path, content):
    path = tmp_path / "x.duckdb"
    path.write_bytes(content)
    before = os.stat(path).st_mtime_ns
    with pytest.raises(StoreError, match="not a DuckDB") as info:
        connect(path)
    assert isinstance(info.value, SteeringCoreError) and isinstance(info.value, ValueError)
    with pytest.raises(StoreError, match="not a DuckDB"):
        connect(path, read_only=True)
    assert path.read_bytes() == content  # untouched
    assert os.stat(path).st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.duckdb"]  # no WAL or temp left behind


def test_connect_empty_file_is_a_store_error(tmp_path):
    path = tmp_path / "x.duckdb"
    path.write_bytes(b"")
    with pytest.raises(StoreError, match="DuckDB"):
        connect(path)
    assert path.read_bytes() == b""


def test_connect_read_only_missing_file(tmp_path):
    path = tmp_path / "missing.duckdb"
    with pytest.raises(StoreError, match="No pack database"):
        connect(path, read_only=True)
    assert not path.exists()


def test_connect_round_trip(tmp_path):
    path = tmp_path / "ok.duckdb"
    c = connect(path)
    ensure_schema(c)
    ensure_schema(c)  # idempotent
    set_meta(c, {"model": "tiny"})
    c.close()
    assert path.read_bytes()[8:12] == b"DUCK"
    ro = connect(path, read_only=True)
    try:
        assert get_meta(ro) == {"model": "tiny"}
        with pytest.raises(duckdb.Error):  # read-only really is read-only
            set_meta(ro, {"x": 1})
    finally:
        ro.close()


def test_connect_locked_by_another_process(tmp_path):
    path = tmp_path / "locked.duckdb"
    c = connect(path)
    ensure_schema(c)
    set_meta(c, {"owner": "test"})
    c.close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, duckdb\n"
         "con = duckdb.connect(sys.argv[1])\n"
         "print('ready', flush=True)\n"
         "time.sleep(120)\n",
         str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = holder.stdout.readline()  # blocks until the other process holds the file
        assert line.strip() == "ready", holder.stderr.read() if holder.poll() is not None else line
        assert holder.poll() is None
        with pytest.raises(StoreError, match="another process") as info:
            connect(path)
        assert isinstance(info.value.__cause__, duckdb.IOException)
        with pytest.raises(StoreError, match="another process"):
            connect(path, read_only=True)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
        holder.stderr.close()
    # the lock goes with the process, and the data survived
    deadline = time.monotonic() + 10
    while True:
        try:
            c = connect(path)
            break
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        assert get_meta(c) == {"owner": "test"}
    finally:
        c.close()


# ----------------------------------------------------------------------------------------------
# transactions
# ----------------------------------------------------------------------------------------------


def test_transaction_commits_on_success(con, tmp_path):
    with transaction(con) as c:
        assert c is con
        c.execute("INSERT INTO features (feature_id, label) VALUES (1, 'a'), (2, 'b')")
    assert _count(con) == 2
    con.close()
    again = connect(tmp_path / "pack.duckdb")
    try:
        assert again.execute("SELECT feature_id, label FROM features ORDER BY 1").fetchall() == [(1, "a"), (2, "b")]
    finally:
        again.close()


def test_transaction_rolls_back_on_exception(con):
    con.execute("INSERT INTO features (feature_id, label) VALUES (0, 'keep')")
    with pytest.raises(RuntimeError, match="boom"):
        with transaction(con):
            con.execute("INSERT INTO features (feature_id, label) VALUES (1, 'x'), (2, 'y')")
            con.execute("UPDATE features SET label = 'changed' WHERE feature_id = 0")
            set_meta(con, {"half": "done"})
            assert _count(con) == 3  # visible inside
            raise RuntimeError("boom")
    assert con.execute("SELECT feature_id, label FROM features").fetchall() == [(0, "keep")]
    assert get_meta(con) == {}
    # the connection is usable (no dangling transaction)
    with transaction(con):
        con.execute("INSERT INTO features (feature_id) VALUES (5)")
    assert _count(con) == 2


def test_transaction_rolls_back_on_keyboard_interrupt(con):
    with pytest.raises(KeyboardInterrupt):
        with transaction(con):
            con.execute("INSERT INTO features (feature_id) VALUES (1)")
            raise KeyboardInterrupt
    assert _count(con) == 0


def test_disk_full_inside_transaction_writes_nothing(con, tmp_path):
    with transaction(con):
        con.execute("INSERT INTO features (feature_id, label) VALUES (0, 'before')")
    with pytest.raises(OSError) as info:
        with transaction(con):
            con.execute("INSERT INTO features (feature_id, label) SELECT i, 'new' FROM range(1, 1001) t(i)")
            con.execute("INSERT INTO feature_effects (source_feature, target_feature, effect, rel_effect, rank) "
                        "VALUES (1, 2, 0.5, 0.1, 0)")
            mark_stage(con, "effects")
            raise OSError(28, "No space left on device")
    assert info.value.errno == 28 and "No space left" in str(info.value)
    assert not isinstance(info.value, StoreError)  # propagates as is
    assert _count(con) == 1 and _count(con, "feature_effects") == 0
    assert not stage_done(con, "effects")
    con.close()
    again = connect(tmp_path / "pack.duckdb")  # and nothing reached the file either
    try:
        assert again.execute("SELECT feature_id, label FROM features").fetchall() == [(0, "before")]
        assert _count(again, "feature_effects") == 0 and _count(again, "stages") == 0
    finally:
        again.close()


def test_failed_commit_is_a_store_error(con):
    with pytest.raises(StoreError, match="nothing was written"):
        with transaction(con):
            con.execute("INSERT INTO features (feature_id) VALUES (1)")
            con.execute("ROLLBACK")  # the transaction is gone: COMMIT must fail
    assert _count(con) == 0


# ----------------------------------------------------------------------------------------------
# meta and stages
# ----------------------------------------------------------------------------------------------


def test_meta_round_trip(con):
    items = {"model": "tiny-hf", "layer": 1, "alpha": 0.5, "prompts": ["a", "b"], "spec": {"k": 3, "x": None},
             "flag": True, "nothing": None, "json_text": "[1, 2]"}
    set_meta(con, items)
    meta = get_meta(con)
    assert list(meta) == sorted(items)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["model"] == "tiny-hf"  # strings are stored raw, not JSON-quoted
    assert meta["json_text"] == "[1, 2]"
    assert meta["layer"] == "1" and meta["flag"] == "true" and meta["nothing"] == "null"
    for k, v in items.items():
        if not isinstance(v, str):
            assert json.loads(meta[k]) == v
    set_meta(con, {"layer": 2})  # replace, not duplicate
    assert get_meta(con)["layer"] == "2"
    assert con.execute("SELECT count(*) FROM meta WHERE key = 'layer'").fetchone()[0] == 1


def test_stages(con):
    assert not stage_done(con, "corpus")
    mark_stage(con, "corpus", {"tokens": 1234})
    assert stage_done(con, "corpus")
    assert not stage_done(con, "effects")
    mark_stage(con, "corpus", {"tokens": 99})  # re-marking replaces
    rows = con.execute("SELECT stage, info, finished_at FROM stages").fetchall()
    assert len(rows) == 1 and rows[0][0] == "corpus"
    assert json.loads(rows[0][1]) == {"tokens": 99}
    assert rows[0][2] is not None
    mark_stage(con, "effects")
    assert json.loads(con.execute("SELECT info FROM stages WHERE stage = 'effects'").fetchone()[0]) == {}
    assert stage_done(con, "effects")
