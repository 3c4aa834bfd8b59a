"""Every benchmark module imports and answers --help: a renamed test helper (tests/browser.py became
tests/browser_util.py) broke `python -m bench.pages` with no test noticing, since nothing imports it."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name != "common")


def test_the_benchmarks_are_all_found():
    assert {"effects", "generation", "pages", "pack_reliability"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_a_benchmark_module_imports_and_has_a_main(name):
    mod = importlib.import_module(f"bench.{name}")
    assert callable(getattr(mod, "main", None)), f"bench.{name} has no main()"


def test_bench_pages_answers_help_from_the_command_line():
    """The one benchmark that imports a test helper by path, as a user runs it."""
    res = subprocess.run([sys.executable, "-m", "bench.pages", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--precision" in res.stdout
