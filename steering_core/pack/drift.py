"""A config edited after some stages are done: which done results it would contradict.

A build resumes by skipping the stages it has recorded as done, so a setting changed afterwards
would silently not apply to them, while the pack's ``meta.config`` would claim it did. The builder
therefore compares the config it last ran with against the one it is given and refuses, in one
sentence, a change to any setting a done stage read; ``redo`` of those stages (or setting it back)
is the way on. Settings no done stage read are free to change, and so are where the build runs
and ships (``name``, ``out_dir``, ``ship_to`` and the run-only settings)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

#: Which stages read each setting (a section name, or a top-level key). ``*`` is every stage.
READERS: dict[str, tuple[str, ...]] = {
    "model": ("*",), "layer": ("*",), "hook": ("*",), "seed": ("*",),
    "sae": ("sae", "sae_eval", "stats", "sinks", "control", "effects", "topup", "stability", "reference", "neighbors",
            "approximator", "maps", "outputs", "labels"),
    "precision": ("*",), "device": (),
    "corpus": ("corpus",), "sae_train": ("sae",), "stats": ("stats",),
    "dense_threshold": ("stats", "stability", "reference"),
    "effects": ("control", "effects", "topup", "stability", "reference", "outputs"),
    "alpha": ("control", "effects"), "control": ("control",), "top_effects": ("effects", "topup"),
    "topup": ("topup",), "stability_features": ("stability",), "reference": ("reference",),
    "neighbors": ("neighbors",),
}
#: Where a build runs and ships, not what it computes.
FREE = ("name", "out_dir", "ship_to")


def _changes(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _changes(old.get(k), new.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if old == new else [f"{where} {old!r} → {new!r}"]


def drift(old: dict, new: dict, done: Iterable[str]) -> list[tuple[str, list[str], list[str]]]:
    """``(setting, its changes, the done stages that read it)`` for every changed setting some
    done stage read; empty when the new config can resume this build as it is."""
    from steering_core.pack.config import with_legacy

    done = [s for s in done if s != "ship"]
    old = with_legacy(old)
    out = []
    for key in sorted(set(old) | set(new)):
        if key in FREE or old.get(key) == new.get(key):
            continue
        readers = READERS.get(key, ("*",))  # an unknown setting: assume every stage read it
        hit = list(done) if "*" in readers else [s for s in done if s in readers]
        if hit:
            out.append((key, _changes(old.get(key), new.get(key), key), hit))
    return out


def drift_message(found: list[tuple[str, list[str], list[str]]], order: list[str],
                  downstream: Callable[[Iterable[str]], list[str]] | None = None, done: Iterable[str] = ()) -> str:
    """One sentence naming what changed and the ``redo`` that would apply it (stages in run order):
    the stages that read a changed setting and, given ``downstream`` (the registry's) and the
    ``done`` stages, every done stage built on them, ``ship`` included, so following the advice
    never leaves a pack half built on the old results."""
    hit = {s for _, _, stages in found for s in stages}
    if downstream is not None:
        hit |= set(downstream(hit)) & set(done)
    stages = [s for s in order if s in hit]
    what = "; ".join(", ".join(ch[:3]) + (" …" if len(ch) > 3 else "") for _, ch, _ in found)
    return (f"This config changes settings that done stages were built with ({what}); those stages "
            f"({', '.join(stages)}) would keep their old results. Set them back, or run `python -m steering_core.pack "
            f"redo CONFIG {' '.join(stages)}` first.")
