"""Small wording helpers for sentences the pages build from numbers."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """"1 note", "2 notes", "0 notes": a count with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"
