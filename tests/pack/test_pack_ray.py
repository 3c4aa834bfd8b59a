"""The effect stages on Ray workers (steering_core.pack.distributed): a build on two workers one of
which is killed mid-effects, and one whose driver is killed and resumed, each ends with the
single-process build's tables, byte for byte; bad Ray settings are refused with one sentence and
nothing written.

The tests share one local Ray cluster (2 CPUs, loopback only) started here and shut down at the end,
and one tiny build prefix (corpus → stats) made once; every build runs to the ``reference`` stage,
the last one whose chunks the executor measures (the stages after it run in the driver either way).
Torch runs one thread everywhere, so the driver and the workers compute bit for bit alike."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a single-node cluster on loopback (before ray loads)

import pytest  # noqa: E402
from packs_util import assert_same_build, copy_build, run_cli, write_config  # noqa: E402

from steering_core.pack.builder import Builder  # noqa: E402
from steering_core.pack.config import PackConfigError, load_config  # noqa: E402
from steering_core.pack.distributed.executor import LocalExecutor  # noqa: E402
from steering_core.pack.distributed.ray_pool import RayBuildError, parse_address  # noqa: E402

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed here (pip install -r requirements.txt installs it)")

#: The last stage whose chunks run on the executor.
UNTIL = "reference"


@pytest.fixture(scope="module")
def one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, one_torch_thread) -> Path:
    """A tiny build up to the statistics (the work every test below continues from)."""
    tmp = tmp_path_factory.mktemp("rayprefix")
    b = Builder(load_config(write_config(tmp)), show_bar=False)
    b.run("stats")
    b.close()
    return tmp / "build"


@pytest.fixture(scope="module")
def local_build(prefix, tmp_path_factory) -> Path:
    """The prefix continued to ``reference`` in this process: what every Ray build must equal."""
    tmp = tmp_path_factory.mktemp("raylocal")
    b = Builder(load_config(copy_build(prefix, tmp)), show_bar=False, executor=LocalExecutor())
    b.run(UNTIL)
    b.close()
    return tmp / "build"


def _processes_of(session: str) -> list[tuple[int, str]]:
    """Live processes anywhere on this machine whose command line names the Ray session folder
    (every process of a Ray instance carries it: GCS, raylet, workers, agents)."""
    out = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmd.read_bytes()
            state = (cmd.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if session.encode() in text and state != "Z":
            out.append((int(cmd.parent.name), text.replace(b"\0", b" ")[:80].decode(errors="replace")))
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU Ray instance for this module; shut down at the end, leaving no process behind."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    session = ray._private.worker._global_node.get_session_dir_path()
    assert _processes_of(session)  # the check below can see this instance's processes
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        deadline = time.time() + 30
        while _processes_of(session) and time.time() < deadline:
            time.sleep(0.5)
        assert not _processes_of(session), f"Ray left processes behind: {_processes_of(session)}"


def _ray_build(prefix: Path, tmp: Path, **executor_kw):
    from steering_core.pack.distributed.ray_pool import RayExecutor

    ex = RayExecutor("auto", actors=2, **executor_kw)
    b = Builder(load_config(copy_build(prefix, tmp)), show_bar=False, executor=ex)
    return b, ex


@needs_ray
def test_a_worker_killed_mid_effects_is_replaced_and_its_chunks_retried(prefix, local_build, ray_cluster, tmp_path):
    """Two one-thread workers in their own processes measure the control and effects chunks; one is
    killed at the first effects result, and the build still ends with the single-process tables."""
    import ray

    b, ex = _ray_build(prefix, tmp_path)
    killed, before = [], []

    def kill_one(label: str, chunk: int) -> None:
        if label == "effects" and not killed:
            before.extend(dict(w) for w in ex.workers)
            killed.append(ex.actors[0])
            ray.kill(ex.actors[0])  # chunks queued on it are lost with it

    ex.on_result = kill_one
    try:
        b.run(UNTIL)
        assert len(before) == 2 and len({w["pid"] for w in before}) == 2
        assert all(w["pid"] != os.getpid() and w["threads"] == 1 for w in before)
        assert killed and ex.replaced >= 1 and ex.retried >= 1
        assert killed[0] not in ex.actors
    finally:
        b.close()
        ex.close()
    assert_same_build(local_build, tmp_path / "build")


@needs_ray
def test_a_killed_driver_resumes_on_ray_to_the_same_tables(prefix, local_build, ray_cluster, tmp_path):
    cfg = copy_build(prefix, tmp_path)
    env = {"RAY_ADDRESS": ray_cluster, "OMP_NUM_THREADS": "1"}  # join this module's cluster; one torch thread
    args = ["build", str(cfg), "--quiet", "--until", UNTIL, "--ray", "auto"]
    res = run_cli(args, {**env, "STEERING_PACK_CRASH_AT": "effects:2:after_commit"}, fresh=True)
    assert res.returncode == -9, (res.returncode, res.stderr[-2000:])
    import duckdb

    con = duckdb.connect(str(tmp_path / "build" / "build.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM effect_chunks").fetchone()[0] == 3  # chunks 0, 1, 2 committed
    con.close()
    res = run_cli(args, env, fresh=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_build(local_build, tmp_path / "build")


@needs_ray
@pytest.mark.parametrize("address, says", [("ray://127.0.0.1:1", "cannot be reached"),
                                           ("127.0.0.1:1", "cannot be reached"),
                                           ("local:0", "no workers"),
                                           ("http://x:1", "ray must be")])
def test_a_bad_ray_address_is_one_sentence_and_nothing_is_written(tmp_path, address, says):
    cfg = write_config(tmp_path)
    res = run_cli(["build", str(cfg), "--quiet", "--ray", address], fresh=True)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "build").exists() and not (tmp_path / "pack").exists()


@needs_ray
def test_cuda_on_a_cluster_without_gpus_is_refused(prefix, ray_cluster, tmp_path):
    b, ex = _ray_build(prefix, tmp_path, device="cuda")
    try:
        with pytest.raises(RayBuildError, match="has no GPU"):
            b.run("control")
        assert not ex.actors  # refused before any worker started
    finally:
        b.close()
        ex.close()


@needs_ray
def test_workers_running_other_measuring_code_are_refused_before_any_chunk(prefix, ray_cluster, tmp_path, monkeypatch):
    """A node left on an older checkout would measure by other rules (a top-up's first_rollout
    ignored, say) without a trace in its numbers; the driver compares code hashes first."""
    from steering_core.pack.distributed import ray_pool

    monkeypatch.setattr(ray_pool, "code_fingerprint", lambda: "0123456789abcdef")  # the driver only
    b, ex = _ray_build(prefix, tmp_path)
    try:
        with pytest.raises(RayBuildError, match="runs other measuring code than this process .* against "
                           "0123456789abcdef"):
            b.run("control")
        assert not b.done("control")
    finally:
        b.close()
        ex.close()


def test_the_code_hash_covers_the_measuring_code_and_changes_with_it(tmp_path, monkeypatch):
    from steering_core.pack.distributed import work

    first = work.code_fingerprint()
    assert len(first) == 16 and work.code_fingerprint() == first
    root = Path(work.__file__).resolve().parents[2]
    for part in work.MEASURING_CODE:
        for f in (root / part).rglob("*.py"):
            dst = tmp_path / "steering_core" / f.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(f.read_bytes())
    monkeypatch.setattr(work, "__file__", str(tmp_path / "steering_core" / "pack" / "distributed" / "work.py"))
    work.code_fingerprint.cache_clear()
    try:
        assert work.code_fingerprint() == first  # the same files elsewhere: the same hash
        sampling = tmp_path / "steering_core" / "model" / "sampling.py"
        sampling.write_text(sampling.read_text() + "\n# edited\n")
        work.code_fingerprint.cache_clear()
        assert work.code_fingerprint() != first
    finally:
        work.code_fingerprint.cache_clear()


def test_ray_settings_are_checked_in_the_config(tmp_path):
    for good in ("auto", "local:2", "ray://head.example:10001", "10.0.0.5:6379", "[::1]:6379"):
        assert parse_address(good).text == good
    cfg = write_config(tmp_path)
    cfg.write_text('ray = "local:two"\n' + cfg.read_text())
    with pytest.raises(PackConfigError, match="ray must be"):
        load_config(cfg)


def test_ray_settings_do_not_change_the_stored_config(tmp_path):
    a = load_config(write_config(tmp_path))
    b = load_config(write_config(tmp_path))
    b.ray, b.ray_actors, b.ray_threads = "local:2", 2, 1
    b.progress, b.progress_every = "packs/progress/tiny", 4
    assert a.to_dict() == b.to_dict() and "ray" not in a.to_dict() and a.to_dict()["device"] == "auto"


def test_ray_threads_on_the_command_line(tmp_path):
    """``--ray-threads`` sets the workers' thread count; a negative one is one sentence, nothing written."""
    from steering_core.pack.cli import _override

    cfg = load_config(write_config(tmp_path))
    _override(cfg, argparse.Namespace(device=None, ray="local:2", ray_actors=None, ray_threads=1))
    assert (cfg.ray, cfg.ray_threads) == ("local:2", 1)
    res = run_cli(["build", str(write_config(tmp_path)), "--ray-threads", "-1"], fresh=True)
    assert res.returncode == 2 and "--ray-threads cannot be negative" in res.stderr
    assert not (tmp_path / "build").exists()


def test_the_local_executor_yields_in_job_order_and_reports_each_chunk(prefix, tmp_path):
    """The executor protocol on the local executor: every chunk reported once, in chunk order."""
    seen = []
    ex = LocalExecutor()
    ex.on_result = lambda label, chunk: seen.append((label, chunk))
    shutil.copytree(prefix, tmp_path / "build")
    b = Builder(load_config(write_config(tmp_path)), show_bar=False, executor=ex)
    b.run("effects")
    b.close()
    effects = [c for label, c in seen if label == "effects"]
    control = [c for label, c in seen if label == "control"]
    assert effects == sorted(effects) == list(range(5)) and control == list(range(1))
