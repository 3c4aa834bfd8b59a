"""Contrastive pair datasets: the input every extraction method learns a direction from.

A steering vector is only as good as the pairs behind it (DESIGN.md §5; documents 000 and 002):
CAA averages ``a(positive) − a(negative)`` over pairs, PCA and the probe look at the spread of
those differences, ACE also uses the mean of the negatives. A single bad row moves all of them
silently — an identical pair adds a zero difference, a duplicated pair counts twice, a swapped
pair cancels another, an empty text measures the BOS token. So every way pairs enter the
project (typed in the app, uploaded as CSV/JSONL/JSON, generated from templates or stories,
loaded from the shipped examples) goes through :func:`validate_pairs`, which refuses the whole
set with one sentence naming the offending rows rather than fitting on a quietly damaged set.

Saved datasets live in DuckDB (default ``cache_dir()/library.duckdb``, tables ``datasets`` and
``dataset_pairs``). A save is validated completely first and written in one transaction, so a
failed save leaves the store exactly as it was.

Pairs may be marked ``heldout``: they are kept out of fitting so a vector can be evaluated on
pairs it never saw (document 000 §3.2.2 holds out test pairs the same way).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import numbers
import random
import re
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from steering_core.errors import SteeringCoreError
from steering_core.model.loading import cache_dir
from steering_core.names import InvalidNameError, clean_name, unencodable_at
from steering_core.storage.db import connect, transaction

#: Longest positive or negative text accepted (a few paragraphs; longer texts are almost
#: always a pasted document or a broken CSV quote that swallowed many rows).
MAX_TEXT_CHARS = 4000
#: Most pairs one dataset may hold (extraction runs a forward pass per text).
MAX_PAIRS = 20_000
#: Largest upload accepted.
MAX_UPLOAD_BYTES = 5_000_000
#: Longest description and source notes stored with a dataset.
MAX_DESCRIPTION_CHARS = 2000
MAX_SOURCE_CHARS = 500
#: The two splits: pairs to fit on, and pairs kept back to evaluate on.
SPLITS = ("train", "heldout")
#: Fewest pairs each method needs (kept in step with ``steering_core.vectors.methods``).
MIN_PAIRS_PCA_ACE = 2
MIN_PAIRS_PROBE = 4
#: Row numbers listed in one error message.
MAX_LISTED = 5
#: Upload formats, by file extension.
UPLOAD_FORMATS = (".csv", ".jsonl", ".json")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

_FIELDS = ("positive", "negative", "split")


class DatasetError(SteeringCoreError):
    """Pairs, a file or a dataset name that cannot be used as given."""


# ----------------------------------------------------------------------------------------------
# Data types
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One contrastive example: the same situation written with and without the concept.
    ``split`` is ``"train"`` (used to fit) or ``"heldout"`` (kept back for evaluation)."""

    positive: str
    negative: str
    split: str = "train"


@dataclass
class ContrastiveDataset:
    """A named list of pairs with the notes a researcher needs to trust it later: what it is
    meant to capture (``description``) and where it came from (``source``)."""

    name: str
    pairs: list[Pair] = field(default_factory=list)
    description: str = ""
    source: str = ""

    @property
    def train(self) -> list[Pair]:
        """Pairs to fit on: every pair not marked heldout (all of them when none is)."""
        return [p for p in self.pairs if p.split != "heldout"]

    @property
    def heldout(self) -> list[Pair]:
        """Pairs kept back for evaluation (empty when none is marked)."""
        return [p for p in self.pairs if p.split == "heldout"]

    @property
    def positives(self) -> list[str]:
        """Positive texts of all pairs, in order (use ``[p.positive for p in ds.train]`` to fit)."""
        return [p.positive for p in self.pairs]

    @property
    def negatives(self) -> list[str]:
        """Negative texts of all pairs, in order, aligned with :attr:`positives`."""
        return [p.negative for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------


def validate_name(name: Any) -> str:
    """A dataset name as stored, or a :class:`DatasetError`: the name becomes a database key and
    may end up in a file name, so it must never be able to point outside the library."""
    try:
        return clean_name(name, what="dataset")
    except InvalidNameError as exc:
        raise DatasetError(str(exc)) from None


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

# (problem phrase for the message, short label for "also found") in the order they are reported.
_PROBLEMS: dict[str, tuple[str, str]] = {
    "shape": ("Rows that are not pairs (give each as {'positive': ..., 'negative': ...} or a "
              "(positive, negative[, split]) tuple)", "rows that are not pairs"),
    "keys": ("Rows without a 'positive' or 'negative' field", "rows missing a field"),
    "unpaired": ("Unpaired rows, with the positive or the negative text missing", "unpaired rows"),
    "type": ("Values that are not text (numbers, lists or other values); write them as text", "non-text values"),
    "empty": ("Empty or whitespace-only texts; every pair needs both a positive and a negative text",
              "empty texts"),
    "chars": ("Texts with characters that cannot be stored (a NUL byte or an unpaired surrogate)",
              "unstorable characters"),
    "long": (f"Texts longer than {MAX_TEXT_CHARS:,} characters; shorten or split them", "over-long texts"),
    "identical": ("Pairs whose positive and negative are the same text, which gives a zero difference "
                  "vector; change one side or remove them", "identical pairs"),
    "split": ("Unknown split values, which must be 'train' or 'heldout'", "unknown splits"),
    "duplicate": ("Duplicate pairs that repeat an earlier positive and negative; remove the duplicates",
                  "duplicate pairs"),
    "swapped": ("Pairs that swap an earlier pair's positive and negative, so the two cancel out; "
                "remove one or fix its direction", "swapped pairs"),
}


def _is_missing(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        try:
            return bool(x != x)  # NaN, including numpy floats
        except (TypeError, ValueError):
            return False
    return type(x).__name__ in ("NAType", "NaTType")  # pandas missing values


def _fields(row: Any) -> tuple[str | None, Any, Any, Any, list[str]]:
    """(problem or None, positive, negative, split, ignored field names) of one input row."""
    if isinstance(row, Pair):
        return None, row.positive, row.negative, row.split, []
    if isinstance(row, Mapping):
        keys = [str(k) for k in row.keys()]
        if "positive" not in row or "negative" not in row:
            return "keys", None, None, None, keys
        return None, row["positive"], row["negative"], row.get("split"), [k for k in keys if k not in _FIELDS]
    if isinstance(row, (tuple, list)) and len(row) in (2, 3):
        return None, row[0], row[1], (row[2] if len(row) == 3 else None), []
    return "shape", None, None, None, []


def _text_problem(x: Any) -> str | None:
    if _is_missing(x):
        return "unpaired"
    if not isinstance(x, str):
        return "type"
    if not x.strip():
        return "empty"
    if "\x00" in x:
        return "chars"
    if unencodable_at(x) is not None:
        return "chars"
    if len(x) > MAX_TEXT_CHARS:
        return "long"
    return None


def _split_value(x: Any) -> str | None:
    """The normalised split, or None when the value is not one of :data:`SPLITS`."""
    if _is_missing(x):
        return "train"
    if not isinstance(x, str):
        return None
    s = x.strip().lower()
    if not s:
        return "train"
    return s if s in SPLITS else None


def _where(unit: str, nums: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in nums[:MAX_LISTED])
    more = f" and {len(nums) - MAX_LISTED} more" if len(nums) > MAX_LISTED else ""
    return f"{unit}{'s' if len(nums) > 1 else ''} {shown}{more}"


def _as_rows(rows: Any) -> list[Any]:
    if isinstance(rows, ContrastiveDataset):
        return list(rows.pairs)
    if rows is None or isinstance(rows, (str, bytes, bytearray, Mapping)):
        raise DatasetError("Give the pairs as a list of rows, each {'positive': ..., 'negative': ...} "
                           "or a (positive, negative) tuple.")
    try:
        return list(rows)
    except TypeError:
        raise DatasetError(f"Give the pairs as a list of rows, not {type(rows).__name__}.") from None


def _validate(rows: list[Any], unit: str = "row", numbers_: Sequence[int] | None = None,
              what: str = "The dataset") -> tuple[list[Pair], list[str]]:
    if not rows:
        raise DatasetError(f"{what} has no pairs; add at least one positive/negative pair.")
    if len(rows) > MAX_PAIRS:
        raise DatasetError(f"{what} has {len(rows):,} pairs, more than the {MAX_PAIRS:,} one dataset may hold; "
                           "split it into several datasets.")
    nums = list(numbers_) if numbers_ is not None else list(range(1, len(rows) + 1))
    found: dict[str, list[int]] = {}
    first_keys: list[str] | None = None
    first_split: Any = None
    ignored: dict[str, None] = {}
    seen: set[tuple[str, str]] = set()
    pairs: list[Pair] = []
    for row, num in zip(rows, nums):
        problem, pos, neg, split, extra = _fields(row)
        ignored.update(dict.fromkeys(extra))
        if problem is None:
            problem = _text_problem(pos) or _text_problem(neg)
        if problem is None and pos.strip() == neg.strip():
            problem = "identical"
        norm = None
        if problem is None:
            norm = _split_value(split)
            if norm is None:
                problem = "split"
                first_split = split if first_split is None else first_split
        if problem is None:
            key = (pos.strip(), neg.strip())
            if key in seen:
                problem = "duplicate"
            elif key[::-1] in seen:
                problem = "swapped"
            seen.add(key)
        if problem is not None:
            if problem == "keys" and first_keys is None:
                first_keys = extra
            found.setdefault(problem, []).append(num)
            continue
        pairs.append(Pair(str(pos), str(neg), norm))  # type: ignore[arg-type]
    if found:
        order = [k for k in _PROBLEMS if k in found]
        first = order[0]
        phrase = _PROBLEMS[first][0]
        if first == "keys":
            phrase += f" (the first has {', '.join(repr(k) for k in first_keys) or 'no fields'})"
        if first == "split":
            phrase += f" (the first is {first_split!r})"
        msg = f"{phrase}: {_where(unit, found[first])}."
        others = [f"{_PROBLEMS[k][1]} ({len(found[k])})" for k in order[1:]]
        if others:
            msg += f" Also found: {', '.join(others)}."
        raise DatasetError(msg)
    train = [p for p in pairs if p.split == "train"]
    if not train:
        raise DatasetError(f"Every pair in {what.lower() if what.startswith('The') else what} is marked heldout; "
                           "mark at least one as train so there is something to fit on.")
    warnings: list[str] = []
    if len(train) == 1:
        warnings.append(f"Only one pair{' to train on' if len(train) < len(pairs) else ''}: CAA works but is "
                        f"noisy; PCA and ACE need at least {MIN_PAIRS_PCA_ACE} pairs and the probe at least "
                        f"{MIN_PAIRS_PROBE}.")
    elif len(train) < MIN_PAIRS_PROBE:
        warnings.append(f"Only {len(train)} pairs to train on: the linear probe needs at least {MIN_PAIRS_PROBE}.")
    if ignored:
        warnings.append(f"Ignored fields: {', '.join(sorted(ignored))} (only positive, negative and split are read).")
    return pairs, warnings


def validate_pairs(rows: Iterable[Any]) -> tuple[list[Pair], list[str]]:
    """Check pairs before anything is fitted or saved, so a damaged set is refused with the row
    numbers to fix instead of producing a quietly wrong vector.

    ``rows`` holds :class:`Pair` objects, dicts with ``positive``/``negative`` (and optionally
    ``split``) or ``(positive, negative[, split])`` tuples. Returns the clean pairs (texts exactly
    as given, split normalised) and warnings that do not block use (too few pairs for some
    methods, ignored fields). Raises :class:`DatasetError` naming at most five 1-based rows.
    """
    return _validate(_as_rows(rows))


def _dup_key(row: Any) -> tuple[str, str] | None:
    problem, pos, neg, _, _ = _fields(row)
    if problem is None and isinstance(pos, str) and isinstance(neg, str):
        return pos.strip(), neg.strip()
    return None


def table_rows(records: Iterable[dict]) -> list[dict]:
    """Rows of an edited table as validation input: cells that are NaN/None become None, and rows
    with nothing on either side (the blank row a table editor appends) are dropped, so only rows a
    person actually wrote in get checked."""
    out = []
    for r in records:
        row = {k: (None if _is_missing(v) else v) for k, v in dict(r).items()}
        if row.get("positive") in (None, "") and row.get("negative") in (None, ""):
            continue
        out.append(row)
    return out


def drop_duplicates(rows: Iterable[Any]) -> list[Any]:
    """The rows with later repeats of a pair removed (first occurrence kept, order and row type
    unchanged), for a "remove duplicates" button: duplicates are refused by
    :func:`validate_pairs` because they silently weight one example twice. Rows that are not
    valid pairs are kept, so validation still reports them."""
    out: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for row in _as_rows(rows):
        key = _dup_key(row)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------
# Upload and export
# ----------------------------------------------------------------------------------------------


def _decode(data: bytes, filename: str) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DatasetError(f"{filename} is UTF-16 text; save it as UTF-8 and upload it again.")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        raise DatasetError(f"{filename} is not UTF-8 text (byte offset {offset:,} is 0x{data[offset]:02x}); "
                           "save it as UTF-8 and upload it again.") from None


def _parse_csv(text: str, filename: str) -> tuple[list[Any], list[int], list[str]]:
    # strict: an unclosed quote is an error, not a field that silently swallows the rows after it
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{filename} is empty; it needs a header row with positive and negative columns.") from None
    except csv.Error as exc:
        raise DatasetError(f"{filename} is not valid CSV on line 1 ({exc}).") from None
    cols = [c.strip().lower() for c in header]
    if "positive" not in cols or "negative" not in cols:
        shown = ", ".join(repr(c) for c in header[:10]) or "none"
        raise DatasetError(f"{filename} needs a header row with the columns positive and negative "
                           f"(and optionally split); it has {shown}.")
    repeated = sorted({c for c in cols if c in _FIELDS and cols.count(c) > 1})
    if repeated:
        raise DatasetError(f"{filename} has more than one {', '.join(repeated)} column; keep one of each.")
    idx = {name: cols.index(name) for name in _FIELDS if name in cols}
    ignored = [h for h, c in zip(header, cols) if c not in _FIELDS]
    rows: list[Any] = []
    lines: list[int] = []
    while True:
        start = reader.line_num + 1
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise DatasetError(f"{filename} has a quote (\") opened on line {start} that is never closed, so "
                                   "everything after it would be read as one text; close or remove it.") from None
            raise DatasetError(f"{filename} is not valid CSV near line {reader.line_num} ({exc}).") from None
        if not any(c.strip() for c in rec):
            continue  # blank line, or a spreadsheet's empty row ",,"
        if len(rows) >= MAX_PAIRS:
            raise DatasetError(f"{filename} has more than the {MAX_PAIRS:,} pairs one dataset may hold; "
                               "split it into several files.")
        row = {name: (rec[i] if i < len(rec) else None) for name, i in idx.items()}
        rows.append(row)
        lines.append(start)
    warnings = [f"Ignored columns: {', '.join(repr(h) for h in ignored)}."] if ignored else []
    return rows, lines, warnings


def _kind(obj: Any) -> str:
    return {list: "list", str: "string", bool: "true/false", type(None): "null"}.get(type(obj), "number")


def _parse_jsonl(text: str, filename: str) -> tuple[list[Any], list[int], list[str]]:
    rows: list[Any] = []
    lines: list[int] = []
    # Split on "\n" only: str.splitlines() would also break at U+2028 and friends, which JSON
    # allows unescaped inside strings.
    for i, line in enumerate(text.split("\n"), 1):
        s = line.strip()
        if not s:
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"Line {i} of {filename} is not valid JSON ({exc.msg} at column {exc.colno}); "
                               "each line must be one object like {\"positive\": ..., \"negative\": ...}.") from None
        except RecursionError:
            raise DatasetError(f"Line {i} of {filename} nests JSON too deeply to read; each line must be one "
                               "object like {\"positive\": ..., \"negative\": ...}.") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"Line {i} of {filename} is a JSON {_kind(obj)}, not an object like "
                               "{\"positive\": ..., \"negative\": ...}.")
        if len(rows) >= MAX_PAIRS:
            raise DatasetError(f"{filename} has more than the {MAX_PAIRS:,} pairs one dataset may hold; "
                               "split it into several files.")
        rows.append(obj)
        lines.append(i)
    return rows, lines, []


def _parse_json(text: str, filename: str) -> tuple[list[Any], list[int], list[str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{filename} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno}).") from None
    except RecursionError:
        raise DatasetError(f"{filename} nests JSON too deeply to read; it must be a list of objects like "
                           "[{\"positive\": ..., \"negative\": ...}, ...].") from None
    if not isinstance(doc, list):
        kind = "object" if isinstance(doc, dict) else _kind(doc)
        raise DatasetError(f"{filename} holds a JSON {kind}; it must be a list of objects like "
                           "[{\"positive\": ..., \"negative\": ...}, ...].")
    for i, obj in enumerate(doc, 1):
        if not isinstance(obj, dict):
            raise DatasetError(f"Item {i} of {filename} is a JSON {_kind(obj)}, not an object like "
                               "{\"positive\": ..., \"negative\": ...}.")
    return doc, list(range(1, len(doc) + 1)), []


def parse_upload(data: bytes, filename: str) -> tuple[list[Pair], list[str]]:
    """Read an uploaded ``.csv`` (header with positive, negative and optional split columns),
    ``.jsonl`` (one object per line) or ``.json`` (a list of objects) into validated pairs.

    Everything a person might upload by mistake — a huge file, another encoding, a spreadsheet
    without the right columns, a broken line — is refused with the place to fix it, before any
    pair is used. Returns the pairs and non-blocking warnings (ignored columns, few pairs).
    """
    name = Path(str(filename or "")).name or "The file"
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatasetError(f"Upload data must be bytes, not {type(data).__name__}.")
    data = bytes(data)
    if len(data) > MAX_UPLOAD_BYTES:
        raise DatasetError(f"{name} is {len(data) / 1e6:.1f} MB ({len(data):,} bytes); uploads are at most "
                           f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB, so split it into several datasets.")
    suffix = Path(name).suffix.lower()
    parsers = {".csv": _parse_csv, ".jsonl": _parse_jsonl, ".json": _parse_json}
    if suffix not in parsers:
        raise DatasetError(f"{name} has the extension {suffix or '(none)'!s}; upload a "
                           f"{', '.join(UPLOAD_FORMATS[:-1])} or {UPLOAD_FORMATS[-1]} file.")
    text = _decode(data, name)
    rows, where, warnings = parsers[suffix](text, name)
    unit = {".csv": "CSV line", ".jsonl": "line", ".json": "item"}[suffix]
    pairs, more = _validate(rows, unit, where, what=name)
    return pairs, warnings + more


def _pairs_of(ds: ContrastiveDataset | Iterable[Pair]) -> list[Pair]:
    return list(ds.pairs) if isinstance(ds, ContrastiveDataset) else list(ds)


def to_csv(ds: ContrastiveDataset | Iterable[Pair]) -> str:
    """The dataset as CSV (positive, negative, split), readable back by :func:`parse_upload`
    unchanged — commas, quotes, line breaks and any Unicode inside texts included — so a
    researcher can edit it in a spreadsheet and upload it again."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(_FIELDS)
    for p in _pairs_of(ds):
        writer.writerow([p.positive, p.negative, p.split])
    return buf.getvalue()


def to_jsonl(ds: ContrastiveDataset | Iterable[Pair]) -> str:
    """The dataset as JSON Lines (one ``{"positive", "negative", "split"}`` object per line,
    UTF-8 kept readable), readable back by :func:`parse_upload` unchanged."""
    return "".join(json.dumps({"positive": p.positive, "negative": p.negative, "split": p.split},
                              ensure_ascii=False) + "\n" for p in _pairs_of(ds))


# ----------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"<context>|<target>")


def _str_list(values: Any, what: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise DatasetError(f"Give the {what} as a list of texts.")
    if not values:
        raise DatasetError(f"The list of {what} is empty; give at least one.")
    for i, v in enumerate(values, 1):
        if not isinstance(v, str):
            raise DatasetError(f"{what.capitalize()} item {i} is {type(v).__name__}, not text.")
    return list(values)


def _no_repeats(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise DatasetError(f"The {what} list has {v!r} twice, which would repeat pairs; remove one.")
        seen.add(v)


def from_templates(templates: list[str], contexts: list[str], positive_targets: list[str],
                   negative_targets: list[str]) -> list[Pair]:
    """Many minimal pairs from a few templates (document 000 §3.2.1): the two prompts of a pair
    share template and context and differ only in the target, e.g. ``"Everyone thought <context>
    would lose. In the end they <target>."`` with contexts ``["the dancer", "the driver"]`` and
    targets ``won``/``lost``.

    Every template × context × aligned (positive_target, negative_target) gives one pair, in
    that nesting order. Placeholders are replaced in one pass, so a context containing the text
    ``<target>`` is kept literally.
    """
    templates = _str_list(templates, "templates")
    contexts = _str_list(contexts, "contexts")
    pos_t = _str_list(positive_targets, "positive targets")
    neg_t = _str_list(negative_targets, "negative targets")
    if len(pos_t) != len(neg_t):
        raise DatasetError(f"There are {len(pos_t)} positive targets and {len(neg_t)} negative targets; "
                           "they pair up by position, so give the same number of each.")
    for i, t in enumerate(templates, 1):
        if "<target>" not in t:
            raise DatasetError(f"Template {i} has no <target> placeholder, so its pairs would be identical: {t!r}.")
        if "<context>" not in t and len(contexts) > 1:
            raise DatasetError(f"Template {i} has no <context> placeholder but there are {len(contexts)} contexts, "
                               f"which would repeat each pair; add <context> to it: {t!r}.")
    _no_repeats(templates, "templates")
    _no_repeats(contexts, "contexts")
    _no_repeats([f"{p}\x00{n}" for p, n in zip(pos_t, neg_t)], "target pairs")
    for i, (p, n) in enumerate(zip(pos_t, neg_t), 1):
        if p.strip() == n.strip():
            raise DatasetError(f"Target pair {i} has the same word on both sides ({p!r}); the pair would be identical.")
    total = len(templates) * len(contexts) * len(pos_t)
    if total > MAX_PAIRS:
        raise DatasetError(f"{len(templates)} templates × {len(contexts)} contexts × {len(pos_t)} targets make "
                           f"{total:,} pairs, more than the {MAX_PAIRS:,} one dataset may hold; use fewer.")

    def fill(template: str, context: str, target: str) -> str:
        return _PLACEHOLDER.sub(lambda m: context if m.group(0) == "<context>" else target, template)

    pairs = [Pair(fill(t, c, p), fill(t, c, n)) for t in templates for c in contexts for p, n in zip(pos_t, neg_t)]
    return _validate(pairs, what="The generated set")[0]


# A continuation that starts with one of these attaches to the beginning without a space.
_NO_SPACE_BEFORE = tuple(",.;:!?…)]}")


def story_pairs(beginning: str, positive_endings: list[str], negative_endings: list[str]) -> list[Pair]:
    """Pairs of short stories with one shared beginning and contrasting continuations
    (document 002): because the beginning is identical, the difference of activations comes
    from the continuation alone.

    Each pair is ``beginning + ending``; a single space is put between them unless the beginning
    already ends in whitespace or the ending starts with whitespace or punctuation. Document 002
    also starts both continuations with the same word, which keeps the pair even more minimal.
    """
    if not isinstance(beginning, str) or not beginning.strip():
        raise DatasetError("Give the stories a shared beginning (a sentence or two both versions start with).")
    pos_e = _str_list(positive_endings, "positive endings")
    neg_e = _str_list(negative_endings, "negative endings")
    if len(pos_e) != len(neg_e):
        raise DatasetError(f"There are {len(pos_e)} positive endings and {len(neg_e)} negative endings; "
                           "they pair up by position, so give the same number of each.")

    def join(ending: str) -> str:
        if beginning[-1].isspace() or not ending or ending[0].isspace() or ending.startswith(_NO_SPACE_BEFORE):
            return beginning + ending
        return beginning + " " + ending

    for i, (p, n) in enumerate(zip(pos_e, neg_e), 1):
        if not p.strip() or not n.strip():
            raise DatasetError(f"Ending pair {i} has an empty ending; the pair would differ in one side only.")
    return _validate([Pair(join(p), join(n)) for p, n in zip(pos_e, neg_e)], unit="ending pair",
                     what="The story set")[0]


def wrap_chat(pairs: Iterable[Pair], format_prompt: Callable[[str], str]) -> list[Pair]:
    """The pairs as a chat model sees a user message (the app passes ``model.format_prompt``):
    an instruction-tuned model reads its own template around every prompt, so activations taken
    from raw text would not match what steering meets at generation time. Splits are kept."""
    if not callable(format_prompt):
        raise DatasetError("format_prompt must be a function from text to text (e.g. model.format_prompt).")
    out: list[Pair] = []
    for i, p in enumerate(_as_rows(pairs), 1):
        if not isinstance(p, Pair):
            raise DatasetError(f"Row {i} is {type(p).__name__}, not a Pair; validate the rows first.")
        try:
            pos, neg = format_prompt(p.positive), format_prompt(p.negative)
        except SteeringCoreError:
            raise
        except Exception as exc:  # a template error is shown, not a traceback
            raise DatasetError(f"The chat template failed on row {i} ({type(exc).__name__}: {exc}).") from exc
        if not isinstance(pos, str) or not isinstance(neg, str):
            raise DatasetError(f"format_prompt returned {type(pos).__name__}, not text, on row {i}.")
        if pos == neg:
            raise DatasetError(f"format_prompt made row {i}'s positive and negative identical; it must keep the text.")
        out.append(Pair(pos, neg, p.split))
    return out


def split_heldout(pairs: Iterable[Pair], fraction: float = 0.2, seed: int = 0) -> list[Pair]:
    """The same pairs with ``round(fraction × n)`` of them marked heldout, so a vector can be
    scored on pairs it was not fitted on. Deterministic for a given order, fraction and seed;
    at least one pair always stays train, and sets of fewer than 3 pairs are not split (there
    is nothing to spare). Existing split marks are replaced."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction < 1:
        raise DatasetError(f"The heldout fraction must be a number from 0 up to (not including) 1, not {fraction!r}.")
    rows = _as_rows(pairs)
    for i, p in enumerate(rows, 1):
        if not isinstance(p, Pair):
            raise DatasetError(f"Row {i} is {type(p).__name__}, not a Pair; validate the rows first.")
    n = len(rows)
    k = 0 if n < 3 else min(int(round(float(fraction) * n)), n - 1)
    chosen = set(random.Random(seed).sample(range(n), k))
    return [replace(p, split="heldout" if i in chosen else "train") for i, p in enumerate(rows)]


# ----------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS datasets (
        name TEXT PRIMARY KEY, description TEXT, source TEXT, n_pairs INTEGER,
        created TIMESTAMP, updated TIMESTAMP)""",
    "CREATE TABLE IF NOT EXISTS dataset_pairs (name TEXT, idx INTEGER, positive TEXT, negative TEXT, split TEXT)",
]


def default_library_db() -> Path:
    """``cache_dir()/library.duckdb``: datasets and saved vectors share one file per project."""
    return cache_dir() / "library.duckdb"


def _clean_note(value: Any, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"The dataset {what} must be text, not {type(value).__name__}.")
    if len(value) > limit:
        raise DatasetError(f"The dataset {what} is at most {limit:,} characters; this one has {len(value):,}.")
    if "\x00" in value:
        raise DatasetError(f"The dataset {what} contains a NUL character; remove it.")
    if unencodable_at(value) is not None:
        raise DatasetError(f"The dataset {what} contains a character that cannot be stored (an unpaired "
                           f"surrogate, at position {unencodable_at(value)}); remove it.")
    return value.strip()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class DatasetStore:
    """Saved datasets in a DuckDB file (times in UTC). Safe to share between threads (one lock
    around the connection); one process at a time may hold the file (DuckDB's rule). Every
    write is validated first and runs in one transaction: a failed save changes nothing."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else default_library_db()
        if self.path.name == "pack.duckdb":
            raise DatasetError("Datasets never go into a pack's pack.duckdb (packs are read-only); "
                               "choose another file.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.path)
        self._lock = threading.RLock()
        with self._lock, transaction(self.con):
            for stmt in _SCHEMA:
                self.con.execute(stmt)

    def close(self) -> None:
        with _SHARED_LOCK:
            for key, shared in list(_SHARED.items()):
                if shared is self:
                    del _SHARED[key]  # the next open_dataset_store() reopens instead of reusing a closed one
        with self._lock:
            self.con.close()

    def __enter__(self) -> "DatasetStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, name: object) -> bool:
        try:
            key = validate_name(name)
        except DatasetError:
            return False
        with self._lock:
            return self.con.execute("SELECT count(*) FROM datasets WHERE name = ?", [key]).fetchone()[0] > 0

    # -- reads ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Saved dataset names, sorted, for a picker."""
        with self._lock:
            return [r[0] for r in self.con.execute("SELECT name FROM datasets ORDER BY name").fetchall()]

    def summaries(self) -> list[dict[str, Any]]:
        """One row per saved dataset (name, description, source, n_pairs, n_heldout, created,
        updated) for the library table, without loading any pair texts."""
        with self._lock:
            cur = self.con.execute(
                """SELECT d.name, d.description, d.source, d.n_pairs, coalesce(h.n, 0) AS n_heldout,
                          d.created, d.updated
                   FROM datasets d
                   LEFT JOIN (SELECT name, count(*) AS n FROM dataset_pairs WHERE split = 'heldout'
                              GROUP BY name) h USING (name)
                   ORDER BY d.name""")
            cols = [c[0] for c in cur.description]
            rows = cur.fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def load(self, name: str) -> ContrastiveDataset:
        """A saved dataset with its pairs in saved order and their splits."""
        key = validate_name(name)
        with self._lock:
            meta = self.con.execute("SELECT description, source, n_pairs FROM datasets WHERE name = ?",
                                    [key]).fetchone()
            if meta is None:
                raise DatasetError(self._missing(key))
            rows = self.con.execute("SELECT positive, negative, split FROM dataset_pairs WHERE name = ? ORDER BY idx",
                                    [key]).fetchall()
        description, source, n_pairs = meta
        if n_pairs != len(rows):
            raise DatasetError(f"The saved dataset {key!r} is damaged ({n_pairs} pairs recorded, {len(rows)} found); "
                               "delete it and save it again.")
        return ContrastiveDataset(key, [Pair(p, n, s) for p, n, s in rows], description or "", source or "")

    def _missing(self, key: str) -> str:
        have = self.names()
        listed = ", ".join(repr(n) for n in have[:10]) + (" …" if len(have) > 10 else "")
        return f"No saved dataset is named {key!r}; " + (f"saved: {listed}." if have else "none is saved yet.")

    # -- writes --------------------------------------------------------------------------------
    def save(self, ds: ContrastiveDataset, overwrite: bool = False) -> list[str]:
        """Save a dataset under its name and return validation warnings. The name, every pair
        and the notes are checked before anything is written, then one transaction replaces all
        rows; an existing name is refused unless ``overwrite`` (keeping its creation time)."""
        if not isinstance(ds, ContrastiveDataset):
            raise DatasetError(f"Save a ContrastiveDataset, not {type(ds).__name__}.")
        key = validate_name(ds.name)
        pairs, warnings = validate_pairs(ds.pairs)
        description = _clean_note(ds.description, "description", MAX_DESCRIPTION_CHARS)
        source = _clean_note(ds.source, "source", MAX_SOURCE_CHARS)
        now = _utcnow()
        with self._lock, transaction(self.con):
            exists = self.con.execute("SELECT count(*) FROM datasets WHERE name = ?", [key]).fetchone()[0] > 0
            if exists and not overwrite:
                raise DatasetError(f"A dataset named {key!r} already exists; choose another name or overwrite it.")
            self.con.execute("DELETE FROM dataset_pairs WHERE name = ?", [key])
            if exists:
                self.con.execute("UPDATE datasets SET description = ?, source = ?, n_pairs = ?, updated = ? "
                                 "WHERE name = ?", [description, source, len(pairs), now, key])
            else:
                self.con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
                                 [key, description, source, len(pairs), now, now])
            self.con.execute(
                "INSERT INTO dataset_pairs SELECT ?, unnest(?::INTEGER[]), unnest(?::TEXT[]), unnest(?::TEXT[]), "
                "unnest(?::TEXT[])",
                [key, list(range(len(pairs))), [p.positive for p in pairs], [p.negative for p in pairs],
                 [p.split for p in pairs]])
        return warnings

    def delete(self, name: str) -> None:
        """Remove a saved dataset and all its pairs (one transaction)."""
        key = validate_name(name)
        with self._lock, transaction(self.con):
            if self.con.execute("SELECT count(*) FROM datasets WHERE name = ?", [key]).fetchone()[0] == 0:
                raise DatasetError(self._missing(key))
            self.con.execute("DELETE FROM dataset_pairs WHERE name = ?", [key])
            self.con.execute("DELETE FROM datasets WHERE name = ?", [key])


_SHARED: dict[Path, DatasetStore] = {}
_SHARED_LOCK = threading.Lock()


def open_dataset_store(path: str | Path | None = None) -> DatasetStore:
    """One shared :class:`DatasetStore` per file in this process (the app's sessions all use it;
    DuckDB lets only one process open the file for writing)."""
    p = (Path(path).expanduser() if path is not None else default_library_db()).resolve()
    with _SHARED_LOCK:
        if p not in _SHARED:
            _SHARED[p] = DatasetStore(p)
        return _SHARED[p]


# ----------------------------------------------------------------------------------------------
# Shipped examples
# ----------------------------------------------------------------------------------------------


def _example_index() -> dict[str, dict[str, str]]:
    path = EXAMPLES_DIR / "index.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def example_datasets() -> list[str]:
    """Names of the datasets shipped with the project, so a first session can fit a vector
    without writing pairs."""
    return sorted(n for n in _example_index() if (EXAMPLES_DIR / f"{n}.jsonl").is_file())


def load_example(name: str) -> ContrastiveDataset:
    """A shipped example, validated, with a deterministic 20% heldout split so the evaluation
    numbers shown for it are reproducible."""
    names = example_datasets()
    if name not in names:
        raise DatasetError(f"No example dataset is named {name!r}; examples: {', '.join(names) or 'none'}.")
    info = _example_index()[name]
    path = EXAMPLES_DIR / f"{name}.jsonl"
    rows, lines, _ = _parse_jsonl(_decode(path.read_bytes(), path.name), path.name)
    pairs, _ = _validate(rows, "line", lines, what=path.name)
    return ContrastiveDataset(name, split_heldout(pairs, 0.2, seed=0), info.get("description", ""),
                              info.get("source", ""))


__all__ = [
    "ContrastiveDataset", "DatasetError", "DatasetStore", "MAX_PAIRS", "MAX_TEXT_CHARS", "MAX_UPLOAD_BYTES",
    "Pair", "SPLITS", "clean_name", "default_library_db", "drop_duplicates", "example_datasets", "from_templates",
    "load_example", "open_dataset_store", "parse_upload", "split_heldout", "story_pairs", "to_csv", "to_jsonl",
    "validate_name", "validate_pairs", "wrap_chat",
]
