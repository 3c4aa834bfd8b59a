"""Contrastive pairs and their validation: the input every extraction method learns a direction from.

A steering vector is only as good as the pairs behind it (docs/design.md §Vector methods): CAA
averages ``a(positive) − a(negative)`` over pairs, PCA and the probe look at the spread of those
differences, ACE also uses the mean of the negatives. A single bad row moves all of them
silently — an identical pair adds a zero difference, a duplicated pair counts twice, a swapped
pair cancels another, an empty text measures the BOS token. So every way pairs enter the
project (typed in the app, uploaded, generated, loaded from the shipped examples) goes through
:func:`validate_pairs` (or :func:`validate_rows`, which numbers rows the way a file does), which
refuses the whole set with one sentence naming the offending rows rather than fitting on a
quietly damaged set.

Pairs may be marked ``heldout``: they are kept out of fitting so a vector can be evaluated on
pairs it never saw ([Purchase 2025] §3.2.2 holds out test pairs the same way; docs/references.md).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from steering_core.errors import DatasetError
from steering_core.names import InvalidNameError, clean_name, unencodable_at

#: Longest positive or negative text accepted (a few paragraphs; longer texts are almost
#: always a pasted document or a broken CSV quote that swallowed many rows).
MAX_TEXT_CHARS = 4000
#: Most pairs one dataset may hold (extraction runs a forward pass per text).
MAX_PAIRS = 20_000
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
#: The fields a row is read from, in file-column order.
FIELDS = ("positive", "negative", "split")

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
        return None, row["positive"], row["negative"], row.get("split"), [k for k in keys if k not in FIELDS]
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


def as_rows(rows: Any) -> list[Any]:
    """The rows of a dataset or any iterable of rows, refusing a lone string or dict (a common
    mistake that would otherwise be read character by character or key by key)."""
    if isinstance(rows, ContrastiveDataset):
        return list(rows.pairs)
    if rows is None or isinstance(rows, (str, bytes, bytearray, Mapping)):
        raise DatasetError("Give the pairs as a list of rows, each {'positive': ..., 'negative': ...} "
                           "or a (positive, negative) tuple.")
    try:
        return list(rows)
    except TypeError:
        raise DatasetError(f"Give the pairs as a list of rows, not {type(rows).__name__}.") from None


def validate_rows(rows: list[Any], unit: str = "row", numbers_: Sequence[int] | None = None,
                  what: str = "The dataset") -> tuple[list[Pair], list[str]]:
    """:func:`validate_pairs` for rows that come from somewhere with its own numbering: a file's
    line numbers (``unit="CSV line"``, ``numbers_``) and name (``what``), so the message points
    at the place a person has to fix."""
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
    return validate_rows(as_rows(rows))


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


def incomplete_rows(rows: Iterable[dict]) -> list[int]:
    """The 1-based numbers of table rows with one side empty or blank, so a count of pairs never
    includes a row that saving would refuse."""
    def blank(v: Any) -> bool:
        return not isinstance(v, str) or not v.strip()

    return [i for i, r in enumerate(rows, 1) if blank(r.get("positive")) or blank(r.get("negative"))]


def drop_duplicates(rows: Iterable[Any]) -> list[Any]:
    """The rows with later repeats of a pair removed (first occurrence kept, order and row type
    unchanged), for a "remove duplicates" button: duplicates are refused by
    :func:`validate_pairs` because they silently weight one example twice. Rows that are not
    valid pairs are kept, so validation still reports them."""
    out: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for row in as_rows(rows):
        key = _dup_key(row)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(row)
    return out
