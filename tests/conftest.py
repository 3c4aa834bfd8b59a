"""Shared fixtures: tiny random models (seconds) and, for a few tests, the embedded model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pages import the ``ui`` package from the repo root, whichever test runs first
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from steering_core import tiny_model  # noqa: E402  (after the environment defaults above)

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one torch thread each
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_rng():
    """Every test starts from the same global random state, so a test's outcome never depends on
    which tests ran before it or how many random numbers a timing-dependent loop drew.
    ``TEST_SEED=k`` starts them from another state, to find thresholds that only hold by luck."""
    import random

    import numpy as np
    import torch

    seed = int(os.environ.get("TEST_SEED", "0"))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _real_main_module():
    """Streamlit's AppTest installs the page it ran as ``__main__`` and never puts the real one
    back, so what a later test sees as the main module depended on which files its worker ran
    first (multiprocessing's children re-run it: see ``packs_util.run_cli``). Give it back."""
    real = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = real


@pytest.fixture(scope="session")
def tiny_hf():
    return tiny_model("hf", n_layers=3, d_model=64, seed=0)


@pytest.fixture(scope="session")
def tiny_tl():
    return tiny_model("tl", n_layers=3, d_model=64, seed=0)


@pytest.fixture(scope="session", params=["hf", "tl"])
def tiny(request, tiny_hf, tiny_tl):
    """Both backends: every steering guarantee must hold for each."""
    return tiny_hf if request.param == "hf" else tiny_tl


@pytest.fixture(scope="session")
def embedded():
    from steering_core import load_model

    return load_model("embedded")


@pytest.fixture(scope="module")
def pack(tiny_pack_build):
    """The tiny built pack, opened once per test module that asks for it (and closed after)."""
    from steering_core.pack.reader import FeaturePack

    p = FeaturePack(tiny_pack_build / "pack")
    yield p
    p.close()


@pytest.fixture(scope="session")
def tiny_pack_build(tmp_path_factory):
    """One uninterrupted tiny pack build, run through the CLI as a user would: ``<dir>/build`` is
    the work directory, ``<dir>/pack`` the shipped pack (pack.duckdb, sae/, approximator)."""
    import fcntl
    import shutil

    from packs_util import write_config

    tmp = tmp_path_factory.mktemp("tinypack")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        _build_tiny_pack(tmp)
        return tmp
    # Under `make test` the first worker to need it builds it once in the run's shared folder and
    # the other copies it (a build is most of a minute); each worker still gets its own copy to read.
    shared = tmp_path_factory.getbasetemp().parent / "tinypack-shared"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "built").exists():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that died mid-build left a part
            shared.mkdir()
            _build_tiny_pack(shared)
            (shared / "built").touch()
    for part in ("build", "pack"):
        shutil.copytree(shared / part, tmp / part)
    shutil.copy(shared / "build.stderr", tmp / "build.stderr")
    write_config(tmp)  # the same config, naming this copy's folders
    return tmp


def _build_tiny_pack(tmp: Path) -> None:
    from packs_util import run_cli, write_config

    res = run_cli(["build", str(write_config(tmp)), "--quiet"], fresh=True)  # as a user starts it
    assert res.returncode == 0, res.stderr[-3000:]
    (tmp / "build.stderr").write_text(res.stderr)  # what a quiet build printed (tests/pack/test_pack.py)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: intra-op threads only spin against other load."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def app_env(tiny_pack_build, tmp_path, monkeypatch):
    """The app on the tiny model with a copy of the tiny pack as its cache (pages that read a pack)."""
    import shutil

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(tiny_pack_build / "pack", cache / "pack")
    monkeypatch.setenv("STEERING_MODEL", "tiny")
    monkeypatch.setenv("STEERING_CACHE_DIR", str(cache))
    monkeypatch.setenv("STEERING_SAE", str(cache / "pack" / "sae"))
    return cache


def pytest_collection_modifyitems(config, items):
    """Files marked ``heavy`` run first. `make test` hands whole files to its two workers in this
    order (``--dist loadfile --no-loadscope-reorder``); with the longest files first, the many
    short ones fill the gaps and both workers end together, instead of one idling while the other
    runs a two-minute browser test handed out last."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)  # stable: files stay whole


def pytest_xdist_make_scheduler(config, log):
    """`make test`'s scheduler: xdist's one-file-per-worker scheduling, except that two browser
    files (a Streamlit server, Chromium and often the embedded model each) never run at once. Two
    together on two cores took up to 2.8× as long each as beside a light file."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    def browser(scope: str) -> bool:
        return Path(scope.split("::")[0]).name.startswith("test_browser_")

    class OneBrowserAtATime(LoadFileScheduling):
        def _assign_work_unit(self, node):
            elsewhere = any(browser(scope) and not all(unit.values())
                            for other, work in self.assigned_work.items() if other is not node
                            for scope, unit in work.items())
            if elsewhere and (other := next((s for s in self.workqueue if not browser(s)), None)):
                self.workqueue.move_to_end(other, last=False)  # the next non-browser file goes first
            super()._assign_work_unit(node)

    return OneBrowserAtATime(config, log)


def pytest_terminal_summary(terminalreporter):
    """How many hostile inputs tests/test_hostile.py tried, when it was collected."""
    mod = next((m for name, m in list(sys.modules.items()) if name.rsplit(".", 1)[-1] == "test_hostile"), None)
    cases = getattr(mod, "CASES", None)
    if cases:
        controls = sum(c.control for c in cases)
        known = sum(bool(c.xfail) for c in cases)
        terminalreporter.write_line(f"hostile-input cases: {len(cases) - controls} (plus {controls} controls that "
                                    f"must work; {known} rows are known bugs marked xfail)")


def pytest_unconfigure(config):
    """Release the DuckDB connections that Streamlit's resource cache still holds from AppTest runs,
    so the interpreter does not end with a page of nanobind "leaked instance" warnings."""
    import gc

    if "streamlit" in sys.modules:
        import streamlit as st

        st.cache_resource.clear()
    gc.collect()


@pytest.fixture()
def sweep_page_app(tmp_path, monkeypatch):
    """The Sweep page under AppTest on the tiny model and SAE, with its own empty cache folder."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STEERING_MODEL", "tiny")
    monkeypatch.setenv("STEERING_SAE", "tiny")
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "pages" / "sweep.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    return at


def run_manual_sweep(at, grid: str, samples: int = 2, tokens: int = 6):
    """Run a sweep on the Sweep page (AppTest) over a manual α grid, keywords "the, a"."""
    at.radio(key="sw_mode").set_value("Manual")
    at = at.run()
    at.text_input(key="sw_grid").set_value(grid)
    at.number_input(key="sw_samples").set_value(samples)
    at.number_input(key="sw_tokens").set_value(tokens)
    at.text_input(key="sw_keywords").set_value("the, a")
    return at.button(key="sw_go").click().run()


@pytest.fixture()
def manual_sweep():
    """:func:`run_manual_sweep`, for tests of the Sweep page."""
    return run_manual_sweep
