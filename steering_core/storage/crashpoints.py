"""Test hooks for crash safety: ``STEERING_CRASH_AT=<name>`` SIGKILLs the process at the named
point, so tests can kill a save, a sweep or a measurement at its worst moment and prove that
nothing is lost or half-written. Unset (always, outside tests), a crash point costs one dict lookup."""

from __future__ import annotations

import os
import signal


def crash_point(name: str, env: str = "STEERING_CRASH_AT") -> None:
    """Die here, as ``kill -9`` would, when the environment names this point."""
    if os.environ.get(env) == name:
        os.kill(os.getpid(), signal.SIGKILL)
