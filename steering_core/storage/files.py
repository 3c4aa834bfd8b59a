"""File modes for what the library writes. ``tempfile.mkstemp`` and safetensors' ``save_file``
create files readable by their owner only (0600) whatever the umask, so a vector saved by the
app under one user, or a pack built by one and served by another, could not be read. Written
files are given the mode a plain ``open`` would give them instead."""

from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.lru_cache(maxsize=1)
def file_mode() -> int:
    """0666 less the process umask (read once: ``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def make_readable(path: str | Path) -> None:
    """Give a just-written file the mode a plain ``open`` would have given it."""
    os.chmod(path, file_mode())


def make_tree_readable(folder: str | Path) -> None:
    """:func:`make_readable` for every file under ``folder``."""
    for p in Path(folder).rglob("*"):
        if p.is_file():
            make_readable(p)
