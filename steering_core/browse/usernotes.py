"""What a person writes about features: their own labels and free-text notes, and the workspace
(pinned cards, labels, notes) they export and import as JSON.

A shipped pack is read-only and lives in git, so edits never go into ``pack.duckdb``. They go to
a separate DuckDB file (default ``cache_dir()/user.duckdb``) keyed by ``(pack id, feature id)``:
the pack id names one build (model, hook, SAE width, build date), because a rebuilt SAE reuses the
same feature ids for different features and old labels must not silently land on them.

Every write is one transaction; a workspace import is validated completely before anything is
written, so a bad file changes nothing.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from steering_core.errors import SteeringCoreError
from steering_core.model.loading import cache_dir
from steering_core.names import unencodable_at
from steering_core.pack.reader import FeaturePack
from steering_core.storage.crashpoints import crash_point
from steering_core.storage.db import connect, transaction

#: Longest label and note accepted (labels are shown in one table cell; notes are free text).
MAX_LABEL_CHARS = 500
MAX_NOTES_CHARS = 20_000
#: Largest workspace file accepted on import.
MAX_WORKSPACE_BYTES = 1_000_000
WORKSPACE_FORMAT = "steering-core-workspace"
WORKSPACE_VERSION = 1

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS user_features (
        pack_id TEXT NOT NULL, feature_id INTEGER NOT NULL, label TEXT, notes TEXT,
        updated_at TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (pack_id, feature_id))""",
]


class UserNotesError(SteeringCoreError):
    """A label, note or workspace file that cannot be saved or imported as given."""


def default_user_db() -> Path:
    """``cache_dir()/user.duckdb`` (``STEERING_CACHE_DIR`` moves it with the rest of the cache)."""
    return cache_dir() / "user.duckdb"


@dataclass(frozen=True)
class FeatureNote:
    """The user's own label and notes for one feature (``None`` where they wrote nothing)."""

    feature_id: int
    label: str | None = None
    notes: str | None = None


def clean_label(label: Any) -> str | None:
    """A label as stored: surrounding whitespace removed, line breaks folded (a label is one table
    cell), ``None``/blank meaning "no label of my own, show the pack's"."""
    if label is None:
        return None
    if not isinstance(label, str):
        raise UserNotesError(f"A label must be text, not {type(label).__name__}.")
    text = " ".join(label.split())
    _check_text(text, "label")
    if len(text) > MAX_LABEL_CHARS:
        raise UserNotesError(f"Labels are at most {MAX_LABEL_CHARS} characters; this one has {len(text)}.")
    return text or None


def clean_notes(notes: Any) -> str | None:
    """Notes as stored: free text kept as written, ``None``/blank meaning none."""
    if notes is None:
        return None
    if not isinstance(notes, str):
        raise UserNotesError(f"Notes must be text, not {type(notes).__name__}.")
    if len(notes) > MAX_NOTES_CHARS:
        raise UserNotesError(f"Notes are at most {MAX_NOTES_CHARS} characters; these have {len(notes)}.")
    _check_text(notes, "notes")
    return notes if notes.strip() else None


def _check_text(text: str, what: str) -> None:
    """Refuse what the database cannot store faithfully: NUL and lone surrogates (broken
    copy-paste), with the position so the person can find it."""
    at = text.find("\x00") if "\x00" in text else unencodable_at(text)
    if at is not None:
        raise UserNotesError(f"The {what} holds a character that cannot be stored ({text[at]!r} at position {at}); "
                             "remove it and save again.")


class UserNotes:
    """The user's labels and notes, in their own DuckDB file. Safe to share between threads (one
    lock around the connection); one process at a time may hold the file (DuckDB's rule)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else default_user_db()
        if self.path.name == "pack.duckdb":
            raise UserNotesError("User notes never go into a pack's pack.duckdb (packs are read-only); "
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
                    del _SHARED[key]  # the next open_user_notes() reopens instead of reusing a closed one
        with self._lock:
            self.con.close()

    def __enter__(self) -> "UserNotes":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------------
    def get(self, pack: FeaturePack, feature_id) -> FeatureNote:
        """The user's label and notes for one feature (empty when they wrote none)."""
        fid = pack.check_feature(feature_id)
        with self._lock:
            row = self.con.execute("SELECT label, notes FROM user_features WHERE pack_id = ? AND feature_id = ?",
                                   [pack.pack_id, fid]).fetchone()
        return FeatureNote(fid, *(row or (None, None)))

    def labels(self, pack: FeaturePack, ids: list[int] | None = None) -> dict[int, str]:
        """User labels of this pack (all of them, or for the given ids)."""
        sql = "SELECT feature_id, label FROM user_features WHERE pack_id = ? AND label IS NOT NULL"
        params: list[Any] = [pack.pack_id]
        if ids is not None:
            if not ids:
                return {}
            sql += " AND feature_id IN (SELECT unnest(?))"
            params.append([int(i) for i in ids])
        with self._lock:
            return {int(f): str(lab) for f, lab in self.con.execute(sql, params).fetchall()}

    def all(self, pack: FeaturePack) -> dict[int, FeatureNote]:
        """Every feature of this pack the user wrote something about."""
        with self._lock:
            rows = self.con.execute("SELECT feature_id, label, notes FROM user_features WHERE pack_id = ? "
                                    "ORDER BY feature_id", [pack.pack_id]).fetchall()
        return {int(f): FeatureNote(int(f), lab, n) for f, lab, n in rows}

    # -- writes --------------------------------------------------------------------------------
    def set_label(self, pack: FeaturePack, feature_id, label: str | None) -> None:
        """Save the user's label (blank or ``None`` reverts to the pack's label)."""
        fid = pack.check_feature(feature_id)
        self._write(pack.pack_id, {fid: clean_label(label)}, {})

    def set_notes(self, pack: FeaturePack, feature_id, notes: str | None) -> None:
        """Save free-text notes (blank or ``None`` deletes them)."""
        fid = pack.check_feature(feature_id)
        self._write(pack.pack_id, {}, {fid: clean_notes(notes)})

    def apply(self, pack: FeaturePack, labels: Mapping[Any, Any], notes: Mapping[Any, Any]) -> None:
        """Write many labels and notes at once: all validated first, then one transaction, so
        either every one is saved or none is."""
        lab = {pack.check_feature(k): clean_label(v) for k, v in labels.items()}
        nts = {pack.check_feature(k): clean_notes(v) for k, v in notes.items()}
        self._write(pack.pack_id, lab, nts)

    def _write(self, pack_id: str, labels: dict[int, str | None], notes: dict[int, str | None]) -> None:
        with self._lock, transaction(self.con):
            for fid in sorted(set(labels) | set(notes)):
                row = self.con.execute("SELECT label, notes FROM user_features WHERE pack_id = ? AND feature_id = ?",
                                       [pack_id, fid]).fetchone()
                label, note = row if row else (None, None)
                label = labels.get(fid, label)
                note = notes.get(fid, note)
                self.con.execute("DELETE FROM user_features WHERE pack_id = ? AND feature_id = ?", [pack_id, fid])
                if label is not None or note is not None:
                    self.con.execute("INSERT INTO user_features (pack_id, feature_id, label, notes) VALUES (?, ?, ?, ?)",
                                     [pack_id, fid, label, note])
                crash_point("label_edit:mid_transaction")


_SHARED: dict[Path, UserNotes] = {}
_SHARED_LOCK = threading.Lock()


def open_user_notes(path: str | Path | None = None) -> UserNotes:
    """One shared :class:`UserNotes` per file in this process (the app's sessions all use it;
    DuckDB lets only one process open the file for writing)."""
    p = (Path(path).expanduser() if path is not None else default_user_db()).resolve()
    with _SHARED_LOCK:
        if p not in _SHARED:
            _SHARED[p] = UserNotes(p)
        return _SHARED[p]


def effective_label(pack: FeaturePack, feature_id, notes: UserNotes | None = None) -> str:
    """The label to show: the user's own if they wrote one, else the pack's, else its auto
    label. ``notes`` defaults to the shared store at :func:`default_user_db`."""
    fid = pack.check_feature(feature_id)
    store = notes if notes is not None else open_user_notes()
    mine = store.get(pack, fid).label
    if mine:
        return mine
    row = pack.feature_columns(["label", "auto_label"], [fid])
    label, auto = row[0] if row else (None, None)
    return label or auto or ""


# ----------------------------------------------------------------------------------------------
# Workspace: pinned cards, labels and notes as one JSON document
# ----------------------------------------------------------------------------------------------


@dataclass
class Workspace:
    """What a person has open and written: the cards they pinned (in order) and their labels and
    notes. ``pack_id`` names the pack build the ids belong to."""

    pinned: list[int] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    pack_id: str | None = None

    @classmethod
    def capture(cls, pack: FeaturePack, store: UserNotes, pinned: list[int] | tuple[int, ...] = ()) -> "Workspace":
        """The current state: the given pinned cards plus every label and note saved for this pack."""
        ids = [pack.check_feature(p) for p in pinned]
        saved = store.all(pack)
        return cls(pinned=list(dict.fromkeys(ids)),
                   labels={f: n.label for f, n in saved.items() if n.label},
                   notes={f: n.notes for f, n in saved.items() if n.notes},
                   pack_id=pack.pack_id)

    def to_json(self) -> str:
        doc = {
            "format": WORKSPACE_FORMAT, "version": WORKSPACE_VERSION, "pack_id": self.pack_id,
            "pinned": [int(p) for p in self.pinned],
            "labels": {str(int(k)): v for k, v in sorted(self.labels.items())},
            "notes": {str(int(k)): v for k, v in sorted(self.notes.items())},
        }
        return json.dumps(doc, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes, pack: FeaturePack, allow_other_pack: bool = False) -> "Workspace":
        """Parse and validate a workspace file against the open pack. Raises
        :class:`UserNotesError` with one sentence on the first problem; has no side effects."""
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if len(raw) > MAX_WORKSPACE_BYTES:
            raise UserNotesError(f"Workspace files are at most {MAX_WORKSPACE_BYTES // 1_000_000} MB; "
                                 f"this one has {len(raw):,} bytes.")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise UserNotesError("The workspace file is nested too deeply to be a workspace.") from None
        except UnicodeDecodeError:
            raise UserNotesError("The workspace file is not UTF-8 text.") from None
        except json.JSONDecodeError as exc:
            raise UserNotesError(f"The workspace file is not valid JSON ({exc.msg} at line {exc.lineno}, "
                                 f"column {exc.colno}).") from None
        if not isinstance(doc, dict):
            raise UserNotesError("A workspace file holds one JSON object with pinned, labels and notes.")
        known = {"format", "version", "pack_id", "pinned", "labels", "notes"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise UserNotesError(f"Unknown workspace field(s) {unknown}; known: {sorted(known)}.")
        if doc.get("format", WORKSPACE_FORMAT) != WORKSPACE_FORMAT:
            raise UserNotesError(f"This is not a workspace file (format {doc.get('format')!r}).")
        version = doc.get("version", WORKSPACE_VERSION)
        if not _is_int(version) or version > WORKSPACE_VERSION:
            raise UserNotesError(f"Workspace version {version!r} is newer than this app reads "
                                 f"(version {WORKSPACE_VERSION}).")
        pack_id = doc.get("pack_id")
        if pack_id is not None and not isinstance(pack_id, str):
            raise UserNotesError("pack_id must be text.")
        if pack_id and pack_id != pack.pack_id and not allow_other_pack:
            raise UserNotesError(f"This workspace was saved for another pack ({pack_id}); the open pack is "
                                 f"{pack.pack_id}. Feature ids would point at different features.")
        pinned = doc.get("pinned", [])
        if not isinstance(pinned, list):
            raise UserNotesError("pinned must be a list of feature ids.")
        ids = []
        for p in pinned:
            if not _is_int(p):
                raise UserNotesError(f"pinned holds {p!r}; feature ids are whole numbers.")
            ids.append(_known(pack, p, "pinned"))
        labels = _id_text_map(doc.get("labels", {}), pack, "labels", clean_label)
        notes = _id_text_map(doc.get("notes", {}), pack, "notes", clean_notes)
        return cls(pinned=list(dict.fromkeys(ids)), labels=labels, notes=notes, pack_id=pack.pack_id)

    def apply(self, pack: FeaturePack, store: UserNotes) -> None:
        """Save this workspace's labels and notes (one transaction). Import merges: labels and
        notes the file does not mention stay as they are. Pinned cards are the app's session
        state and are not stored."""
        for p in self.pinned:
            pack.check_feature(p)
        store.apply(pack, self.labels, self.notes)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _known(pack: FeaturePack, fid: int, where: str) -> int:
    if not 0 <= fid < pack.n_features:
        raise UserNotesError(f"{where} refers to feature {fid}, which this pack does not have "
                             f"(features 0 to {pack.n_features - 1}).")
    return int(fid)


def _id_text_map(obj: Any, pack: FeaturePack, where: str, clean) -> dict[int, str]:
    if not isinstance(obj, dict):
        raise UserNotesError(f"{where} must be an object from feature id to text.")
    out: dict[int, str] = {}
    for k, v in obj.items():
        key = k.strip() if isinstance(k, str) else k
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise UserNotesError(f"{where} has the key {k!r}; keys are feature ids (whole numbers).")
        fid = _known(pack, int(key), where)
        if not isinstance(v, str):
            raise UserNotesError(f"{where}[{k}] must be text, not {type(v).__name__}.")
        try:
            text = clean(v)
        except UserNotesError as exc:
            raise UserNotesError(f"{where}[{k}]: {exc}") from None
        if text is not None:
            out[fid] = text
    return out


__all__ = ["FeatureNote", "MAX_WORKSPACE_BYTES", "UserNotes", "UserNotesError", "Workspace", "default_user_db",
           "effective_label", "open_user_notes"]
