"""Any browser list as CSV or JSON, readable by spreadsheets and by any JSON reader.

Works on every row type of the browser (list rows, search hits, group members, …): a row is a
dataclass or a dict. The two things a naive export gets wrong are handled here: NaN and infinity
(not JSON) become null or an empty cell, and a text cell a spreadsheet would run as a formula
gets a leading apostrophe.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any, Sequence

import numpy as np

from steering_core.browse.rows import ExploreError, ListRow


def _as_dict(row: Any) -> dict:
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    if isinstance(row, dict):
        return dict(row)
    raise ExploreError(f"Only list rows can be exported, not {type(row).__name__}.")


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN/inf
    if isinstance(x, (np.floating,)):
        return _jsonable(float(x))
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def rows_to_json(rows: Sequence[Any]) -> str:
    """A list as a JSON array of objects (NaN becomes null, so any JSON reader accepts it)."""
    return json.dumps([_jsonable(_as_dict(r)) for r in rows], ensure_ascii=False, indent=1)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(_jsonable(v), ensure_ascii=False)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v  # a label such as "=cmd|..." must not run as a spreadsheet formula
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def rows_to_csv(rows: Sequence[Any]) -> str:
    """A list as CSV with a header row (the row type's fields; :class:`ListRow` when empty).
    Text cells that a spreadsheet would run as a formula get a leading apostrophe."""
    dicts = [_as_dict(r) for r in rows]
    cols = list(dicts[0]) if dicts else [f.name for f in dataclasses.fields(ListRow)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for d in dicts:
        w.writerow([_csv_cell(d.get(c)) for c in cols])
    return buf.getvalue()


__all__ = ["rows_to_csv", "rows_to_json"]
