"""Talking to the Hugging Face hub without hanging when it is not there.

The app must work offline: these checks let loaders fail in seconds with a plain sentence
("not on this machine and the hub cannot be reached") instead of thirty seconds of retries
and a traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub be reached? Checked first so offline users wait 3 s, not 30."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_if_unreachable() -> Iterator[None]:
    """Inside, Hugging Face downloads use the local cache only when the hub cannot be reached:
    a missing file fails at once instead of after half a minute of retries."""
    import huggingface_hub.constants as hc

    if hub_reachable():
        yield
        return
    before = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = before


def in_hf_cache(repo_id: str, filename: str = "config.json") -> bool:
    """Whether a hub repo's file is already downloaded (so loading needs no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001
        return False


def explain_load_failure(name: str, exc: Exception) -> str:
    """One plain line saying why a model did not load: offline, unknown name, or the error's first line."""
    text = f"{type(exc).__name__}: {exc}"
    offline_markers = ("ConnectionError", "ConnectTimeout", "OfflineMode", "LocalEntryNotFound",
                       "Max retries", "Name or service not known", "Temporary failure in name resolution",
                       "offline", "Could not resolve", "Network is unreachable")
    if any(m.lower() in text.lower() for m in offline_markers):
        return (
            f"Could not load {name!r}: its weights are not on this machine and the Hugging Face hub "
            "cannot be reached (you seem to be offline). Connect once to download it, or use the "
            "embedded default, which works offline."
        )
    if "not found" in text.lower() or "valid model" in text.lower() or "is not a" in text.lower():
        return f"Could not load {name!r}: no such model is known ({text.splitlines()[0][:300]})."
    return f"Could not load {name!r}: {text.splitlines()[0][:400]}"
