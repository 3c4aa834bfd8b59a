"""Dataset files: reading uploads (CSV, JSON Lines, JSON) and writing CSV and JSON Lines.

Everything a person might upload by mistake — a huge file, another encoding, a spreadsheet
without the right columns, an unclosed quote — is refused with the place to fix it, and what
:func:`to_csv` or :func:`to_jsonl` writes reads back through :func:`parse_upload` unchanged, so a
dataset can go through a spreadsheet and come back intact.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

from steering_core.datasets.pairs import FIELDS, MAX_PAIRS, ContrastiveDataset, Pair, validate_rows
from steering_core.errors import DatasetError

#: Largest upload accepted.
MAX_UPLOAD_BYTES = 5_000_000
#: Upload formats, by file extension.
UPLOAD_FORMATS = (".csv", ".jsonl", ".json")


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
    repeated = sorted({c for c in cols if c in FIELDS and cols.count(c) > 1})
    if repeated:
        raise DatasetError(f"{filename} has more than one {', '.join(repeated)} column; keep one of each.")
    idx = {name: cols.index(name) for name in FIELDS if name in cols}
    ignored = [h for h, c in zip(header, cols) if c not in FIELDS]
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
    pairs, more = validate_rows(rows, unit, where, what=name)
    return pairs, warnings + more


def _pairs_of(ds: ContrastiveDataset | Iterable[Pair]) -> list[Pair]:
    return list(ds.pairs) if isinstance(ds, ContrastiveDataset) else list(ds)


def to_csv(ds: ContrastiveDataset | Iterable[Pair]) -> str:
    """The dataset as CSV (positive, negative, split), readable back by :func:`parse_upload`
    unchanged — commas, quotes, line breaks and any Unicode inside texts included — so a
    researcher can edit it in a spreadsheet and upload it again."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(FIELDS)
    for p in _pairs_of(ds):
        writer.writerow([p.positive, p.negative, p.split])
    return buf.getvalue()


def to_jsonl(ds: ContrastiveDataset | Iterable[Pair]) -> str:
    """The dataset as JSON Lines (one ``{"positive", "negative", "split"}`` object per line,
    UTF-8 kept readable), readable back by :func:`parse_upload` unchanged."""
    return "".join(json.dumps({"positive": p.positive, "negative": p.negative, "split": p.split},
                              ensure_ascii=False) + "\n" for p in _pairs_of(ds))
