"""Names a person gives to things they save (datasets, vectors).

A name is typed by a person and later used as a database key and, for some objects, inside a
file name. So one rule for every saved object: a short, visible name made of letters, digits,
spaces and ``-_.()``. Slashes, backslashes, ``..``, a leading dot and control characters are
refused outright, which makes path traversal impossible whatever a caller later does with the
name, and keeps names readable in a table and portable across file systems.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from steering_core.errors import SteeringCoreError

#: Longest name accepted (it has to fit in one table cell and one file name).
MAX_NAME_CHARS = 80
#: Punctuation allowed in names besides letters, digits and spaces.
NAME_PUNCTUATION = "-_.()"
#: Names Windows reserves for devices; a file with one of these names cannot be created there.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


class InvalidNameError(SteeringCoreError):
    """A name for a saved object that is empty, too long or could be read as a path."""


def unencodable_at(text: str) -> int | None:
    """Where ``text`` holds a character UTF-8 cannot carry (an unpaired surrogate, left by a broken
    copy and paste), or None. Such text fails half-way through a tokenizer, a query or a save, so
    every place that takes text from a person checks it first and says where."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def clean_name(name: Any, what: str = "dataset") -> str:
    """The name as it will be stored, or an :class:`InvalidNameError` saying which rule it breaks.

    Callers pass every user-chosen name through here before it reaches a database or the file
    system, so the check lives in one place. ``what`` names the object in the message
    ("dataset", "vector") so the person knows which field to fix.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"A {what} name must be text, not {type(name).__name__}.")
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise InvalidNameError(f"Give the {what} a name (letters, digits, spaces and {NAME_PUNCTUATION}).")
    if len(text) > MAX_NAME_CHARS:
        raise InvalidNameError(f"A {what} name is at most {MAX_NAME_CHARS} characters; this one has {len(text)}.")
    if "/" in text or "\\" in text:
        raise InvalidNameError(f"A {what} name cannot contain / or \\ (it must not look like a path): {text!r}.")
    bad = sorted({ch for ch in text if not (ch.isalnum() or ch == " " or ch in NAME_PUNCTUATION)})
    if bad:
        shown = " ".join(repr(ch) for ch in bad[:10])
        raise InvalidNameError(f"A {what} name may hold only letters, digits, spaces and {NAME_PUNCTUATION}; "
                         f"remove {shown}.")
    if text.startswith("."):
        raise InvalidNameError(f"A {what} name cannot start with a dot: {text!r}.")
    if ".." in text:
        raise InvalidNameError(f"A {what} name cannot contain '..': {text!r}.")
    if text.split(".")[0].strip().lower() in _RESERVED:
        raise InvalidNameError(f"{text!r} is a name Windows reserves for a device; choose another {what} name.")
    return text


__all__ = ["MAX_NAME_CHARS", "InvalidNameError", "clean_name"]
