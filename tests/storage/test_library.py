"""The library file (steering_core.storage.library): one Library per file per process, one
connection and one lock under all five stores, every table there right after opening, and a
closed Library releases the file to another process."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

from steering_core.datasets import ContrastiveDataset, Pair
from steering_core.storage.db import StoreError
from steering_core.storage.library import Library, close_libraries, open_library
from steering_core.vectors.vector import SteeringVector

TABLES = {"datasets", "dataset_pairs", "vectors", "vector_effect_cache", "sweep_points", "steer_presets"}
STORES = ("datasets", "vectors", "effects", "sweeps", "presets")

# A fresh interpreter opens the file with plain DuckDB and lists its tables: it can only do so
# when no other process holds the file.
PEEK = ("import sys, duckdb\ncon = duckdb.connect(sys.argv[1])\n"
        "print(','.join(sorted(r[0] for r in con.execute('SELECT table_name FROM information_schema.tables')"
        ".fetchall())))\ncon.close()\n")


@pytest.fixture(autouse=True)
def _close_all():
    yield
    close_libraries()


def _peek(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PEEK, str(path)], capture_output=True, text=True, timeout=120)


def _pairs() -> list[Pair]:
    return [Pair("I love the wedding", "I love the meeting"), Pair("The bride smiled", "The clerk smiled")]


def test_one_library_per_file(tmp_path):
    path = tmp_path / "library.duckdb"
    lib = open_library(path)
    assert open_library(path) is lib
    assert open_library(str(tmp_path / "sub" / ".." / "library.duckdb")) is lib  # same file, other spelling
    assert open_library(tmp_path / "other.duckdb") is not lib


def test_parallel_first_opens_get_one_library(tmp_path):
    path = tmp_path / "library.duckdb"
    got: list[Library] = []
    threads = [threading.Thread(target=lambda: got.append(open_library(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(lib is got[0] for lib in got)


def test_all_stores_share_one_connection_and_one_lock(tmp_path):
    lib = open_library(tmp_path / "library.duckdb")
    for name in STORES:
        store = getattr(lib, name)
        assert store.con is lib.con, name
        assert store._lock is lib.lock, name
    assert lib.vectors.folder == tmp_path / "vectors"  # tensors next to the file


def test_schema_is_there_right_after_opening_a_new_file(tmp_path):
    path = tmp_path / "new" / "library.duckdb"
    lib = open_library(path)
    tables = {r[0] for r in lib.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables == TABLES
    lib.close()
    peek = _peek(path)
    assert peek.returncode == 0, peek.stderr[-2000:]
    assert set(peek.stdout.strip().split(",")) == TABLES


def test_what_one_library_saves_a_second_open_sees(tmp_path):
    path = tmp_path / "library.duckdb"
    first = open_library(path)
    first.datasets.save(ContrastiveDataset("weddings", _pairs(), "kept"))
    first.vectors.save(SteeringVector("wed", 1, torch.linspace(-1, 1, 64), method="caa", dataset="weddings"))
    first.presets.save("p", {"alpha": 2.0})
    first.close()
    second = open_library(path)
    assert second is not first and not second.closed
    assert second.datasets.load("weddings").pairs == _pairs()
    vec = second.vectors.load("wed")
    assert vec.dataset == "weddings" and torch.equal(vec.direction, torch.linspace(-1, 1, 64))
    assert second.presets.load("p") == {"alpha": 2.0}


def test_threads_writing_through_different_stores_at_once(tmp_path):
    lib = open_library(tmp_path / "library.duckdb")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                lib.datasets.save(ContrastiveDataset(f"d{i}", [Pair(f"yes {i} {j}", f"no {i} {j}")]), overwrite=True)
                lib.vectors.save(SteeringVector(f"v{i}", 1, torch.full((64,), float(j + 1)), method="caa"),
                                 overwrite=True)
                lib.presets.save(f"p{i}", {"alpha": float(j)})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lib.datasets.names() == ["d0", "d1", "d2", "d3"]
    assert lib.vectors.names() == ["v0", "v1", "v2", "v3"]
    assert [lib.presets.load(f"p{i}") for i in range(4)] == [{"alpha": 4.0}] * 4
    assert sorted(p.name.split(".")[0] for p in lib.vectors.folder.iterdir()) == ["v0", "v1", "v2", "v3"]


def test_closing_releases_the_file(tmp_path):
    path = tmp_path / "library.duckdb"
    lib = open_library(path)
    held = _peek(path)
    assert held.returncode != 0 and "lock" in held.stderr.lower()  # while open, no other process gets in
    lib.close()
    assert lib.closed
    freed = _peek(path)
    assert freed.returncode == 0, freed.stderr[-2000:]
    lib.close()  # twice is harmless


def test_a_file_held_by_another_process_gets_a_sentence_and_is_not_remembered(tmp_path):
    path = tmp_path / "library.duckdb"
    open_library(path).close()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, duckdb\ncon = duckdb.connect(sys.argv[1])\n"
                               "print('ready', flush=True)\ntime.sleep(300)\n", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="another process"):
            open_library(path)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert open_library(path).datasets.names() == []  # the failed open left nothing half-open behind


def test_library_refuses_a_pack_file(tmp_path):
    with pytest.raises(StoreError, match="pack.duckdb"):
        Library(tmp_path / "pack.duckdb")
    assert not (tmp_path / "pack.duckdb").exists()
