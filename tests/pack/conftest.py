"""Shared by the pack tests: the tiny built pack, opened once per test module."""

from __future__ import annotations

import pytest

from steering_core.pack.reader import FeaturePack


@pytest.fixture(scope="module")
def pack(tiny_pack_build):
    p = FeaturePack(tiny_pack_build / "pack")
    yield p
    p.close()
