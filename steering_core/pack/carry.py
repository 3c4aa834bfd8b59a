"""Build progress that outlives the machine (docs/design.md §Builds that span machines).

A full pack build can take longer than a machine is kept (the embedded pack's effects stage alone
is hours on two cores), and a work folder under ``cache/build`` is lost with the machine. The
expensive results that do not depend on the corpus are therefore also copied, as the build goes,
into a *progress folder* (config key ``progress``) small enough to commit:

* ``corpus.npz``: the token windows (generating them is the slow part of the corpus stage; the
  activations and statistics are recomputed from it, which keeps every session on one corpus);
* ``alpha_ref.npy``: the held-out windows every α is loss-matched on;
* ``baseline_rows.npy`` / ``baseline.npy``: the unsteered twin rows of every steered rollout;
* ``control_effects.npy`` / ``control_done.json``: the random directions' effects (once complete);
* ``effects-FFFF-LLLL.npz``: measured effects chunks FFFF..LLLL: ids, effects and SEs (float16,
  which is what the effects stage stores anyway), α and ΔCE, and the seconds each chunk took.
  Each segment is written once and never rewritten, so committing progress adds only new bytes;
* ``topup-FFFF-LLLL.npz``: the same for the top-up stage's extra rollouts (before pooling).

A build that starts in an empty work folder copies the files above into it, recomputes the
activations and statistics from the carried corpus (minutes), and commits the carried chunks through the same code path as measured
ones, so it ends with the same tables as a build that never moved (tested). The folder is deleted
once the pack it served has shipped."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from steering_core.errors import SteeringError
from steering_core.pack.config import resolve_path, with_legacy

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder
    from steering_core.pack.distributed.work import ChunkJob, ChunkResult

#: Work-folder files carried as they are: ``(name, stage that must be done first, or None)``.
FILES = (("corpus.npz", "corpus"), ("alpha_ref.npy", None), ("baseline_rows.npy", None), ("baseline.npy", None),
         ("control_effects.npy", "control"), ("control_done.json", "control"))
#: The largest magnitude float16 holds; effects and SEs never come near it.
F16_MAX = float(np.finfo(np.float16).max)


def to_stored(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` rounded to float16 and back: the precision at which effects and SEs are stored, so a
    chunk read back from a progress segment equals the chunk as the stage committed it."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)) or np.abs(x).max(initial=0.0) > F16_MAX:
        raise SteeringError(f"A measured {what} is not finite or exceeds {F16_MAX:g}; the chunk is not stored.")
    return x.astype(np.float16).astype(np.float32)


def progress_dir(b: Builder) -> Path | None:
    return resolve_path(b.cfg.progress) if b.cfg.progress else None


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)


#: Build facts a carried result depends on; a build that differs in any is refused, not mixed.
IDENTITY = ("model_id", "hook_point", "precision")
#: Config settings a carried result depends on: what is measured, on which text, with which seeds.
#: A chunk of 16 rollouts per prompt among chunks of 32 would be neither budget.
SETTINGS = ("seed", "layer", "hook", "corpus", "effects", "alpha", "control")
# (the top-up's own settings travel in each topup segment and are checked there, so changing them
# never throws away hours of effects chunks)


def _identity(b: Builder) -> dict:
    from steering_core.pack.tables import get_meta

    meta = get_meta(b.con)
    cfg = json.loads(json.dumps(b.cfg.to_dict()))
    return {**{k: meta.get(k, "") for k in IDENTITY}, "settings": {k: cfg.get(k) for k in SETTINGS}}


def restore_files(b: Builder) -> list[str]:
    """Copy carried files the work folder lacks into it (before any stage needs them); returns their
    names. Progress measured on another model, hook or precision is refused with a sentence: a bf16
    chunk paired with fp32 twins, say, would be neither measurement."""
    from steering_core.pack.config import PackConfigError

    src = progress_dir(b)
    if src is None or not src.is_dir():
        return []
    if (src / "progress.json").exists():
        theirs, ours = json.loads((src / "progress.json").read_text()), _identity(b)
        diff = [k for k in IDENTITY if theirs.get(k) != ours[k]]
        if diff:
            raise PackConfigError(
                f"The progress in {src} was measured with {', '.join(f'{k} {theirs.get(k)!r}' for k in diff)}; this "
                f"build has {', '.join(f'{ours[k]!r}' for k in diff)}. Set the config to match (e.g. precision = "
                f"\"{theirs.get('precision')}\") or move the progress folder away to start afresh.")
        if "settings" in theirs:  # progress saved before settings were recorded is taken as it is
            was = with_legacy(theirs["settings"])
            changed = [k for k in SETTINGS if was.get(k) != ours["settings"][k]]
            if changed:
                raise PackConfigError(
                    f"The progress in {src} was measured with other {', '.join(changed)} settings than this config "
                    f"({', '.join(f'{k} = {json.dumps(was.get(k))}' for k in changed)}). Set them back, "
                    "or move the progress folder away to start afresh.")
    out = []
    for name, _ in FILES:
        if (src / name).exists() and not (b.dir / name).exists():
            _atomic_copy(src / name, b.dir / name)
            out.append(name)
    if out:
        b.log(f"progress: restored {', '.join(out)} from {src}")
    return out


@dataclass
class Segment:
    path: Path
    chunks: list[int]


def segments(folder: Path, kind: str = "effects") -> list[Segment]:
    """The ``kind`` segments (``effects`` or ``topup``) in ``folder``, by first chunk."""
    out = []
    for p in sorted(folder.glob(f"{kind}-*.npz")):
        if ".tmp." in p.name:  # a segment being written when the build was killed
            continue
        with np.load(p) as z:
            out.append(Segment(p, z["chunks"].tolist()))
    return out


def carried_chunks(b: Builder, skip: set[int], kind: str = "effects", expect: dict[str, str] | None = None
                   ) -> Iterator[tuple[ChunkJob, ChunkResult, float]]:
    """``(job, result, seconds)`` of every carried ``kind`` chunk not in ``skip``, in chunk order.
    ``expect`` names text arrays every segment must hold with these values (a top-up's settings)."""
    from steering_core.pack.config import PackConfigError
    from steering_core.pack.distributed.work import ChunkJob, ChunkResult

    src = progress_dir(b)
    if src is None or not src.is_dir():
        return
    found = []
    for seg in segments(src, kind):
        with np.load(seg.path) as z:
            for key, want in (expect or {}).items():
                got = str(z[key]) if key in z.files else None
                if got != want:
                    raise PackConfigError(f"{seg.path} was measured with {key} {got}; this build has {want}. Set the "
                                          f"config back, or move the {kind}-*.npz segments away to measure them here.")
            sizes, ids = z["sizes"], z["ids"]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            for j, ci in enumerate(z["chunks"].tolist()):
                if ci in skip:
                    continue
                lo, hi = int(starts[j]), int(starts[j + 1])
                res = ChunkResult(z["effect"][lo:hi].astype(np.float32), z["se"][lo:hi].astype(np.float32),
                                  z["alpha"][lo:hi].copy(), z["dce"][lo:hi].copy())
                found.append((ci, ChunkJob(ci, tuple(int(i) for i in ids[lo:hi])), res, float(z["seconds"][j])))
    for _, job, res, sec in sorted(found, key=lambda t: t[0]):
        yield job, res, sec


def chunk_seconds_path(b: Builder, kind: str = "effects") -> Path:
    return b.dir / f"{kind}_seconds.json"


def chunk_seconds(b: Builder, kind: str = "effects") -> dict[int, float]:
    """Seconds each committed ``kind`` chunk took to measure (carried chunks keep their own)."""
    p = chunk_seconds_path(b, kind)
    return {int(k): v for k, v in json.loads(p.read_text()).items()} if p.exists() else {}


def record_seconds(b: Builder, seconds: dict[int, float], kind: str = "effects") -> None:
    p = chunk_seconds_path(b, kind)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in sorted(seconds.items())}))
    tmp.replace(p)


@dataclass
class ChunkRows:
    """What a segment stores of some committed chunks: each chunk's ids, and their effect and SE
    rows (as measured by that stage, before any pooling), α and ΔCE."""

    ids: list[list[int]]
    effect: np.ndarray
    se: np.ndarray
    alpha: np.ndarray
    dce: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # more arrays for the segment (a top-up's settings)


def _effects_rows(b: Builder, chunks: list[int]) -> ChunkRows:
    """The effects stage's own rows of ``chunks``: where the top-up has pooled a row since, its
    first-pass values from the top-up's snapshot, so a carried chunk is the chunk as measured."""
    from steering_core.pack.effect_stages import CHUNK
    from steering_core.pack.topup import first_pass

    eff = np.load(b.dir / "effects.npy", mmap_mode="r")
    se = np.load(b.dir / "effects_se.npy", mmap_mode="r")
    d_sae = eff.shape[0]
    ids = [list(range(c * CHUNK, min(d_sae, (c + 1) * CHUNK))) for c in chunks]
    flat = [i for part in ids for i in part]
    e, s = np.array(eff[flat], dtype=np.float32), np.array(se[flat], dtype=np.float32)
    snap = first_pass(b)
    if snap is not None:
        where = {f: r for r, f in enumerate(snap.ids.tolist())}
        for r, f in enumerate(flat):
            if f in where:
                e[r], s[r] = snap.effect[where[f]], snap.se[where[f]]
    got = dict(((int(f), (a, d)) for f, a, d in b.con.execute(
        "SELECT feature_id, alpha, alpha_dce FROM features WHERE feature_id IN (SELECT unnest(?))", [flat]).fetchall()))
    return ChunkRows(ids, e, s, np.array([got[f][0] for f in flat], dtype=np.float32),
                     np.array([got[f][1] for f in flat], dtype=np.float32))


def _save_segment(b: Builder, dst: Path, kind: str, done: set[int], rows_of) -> int:
    """One new ``kind`` segment in ``dst`` holding every committed chunk no segment has yet."""
    saved = {c for s in segments(dst, kind) for c in s.chunks}
    new = sorted(done - saved)
    if not new:
        return 0
    rows: ChunkRows = rows_of(b, new)
    secs = chunk_seconds(b, kind)
    arrays = {"chunks": np.array(new, dtype=np.int64), "sizes": np.array([len(p) for p in rows.ids], dtype=np.int64),
              "ids": np.array([i for part in rows.ids for i in part], dtype=np.int64),
              "effect": np.asarray(rows.effect, dtype=np.float16), "se": np.asarray(rows.se, dtype=np.float16),
              "alpha": rows.alpha, "dce": rows.dce,
              "seconds": np.array([secs.get(c, float("nan")) for c in new], dtype=np.float64), **rows.extra}
    path = dst / f"{kind}-{new[0]:04d}-{new[-1]:04d}.npz"
    tmp = path.with_name(path.stem + ".tmp.npz")  # skipped by segments() should the build die while writing
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    b.log(f"progress: saved {len(new)} {kind} chunks to {path}")
    return len(new)


def save_progress(b: Builder) -> int:
    """Copy what the progress folder lacks into it: the carried files, and a new segment per kind
    holding every committed effects (and top-up) chunk no segment has yet. Returns the number of
    effects chunks added."""
    from steering_core.pack import tables
    from steering_core.pack.topup import topup_rows

    dst = progress_dir(b)
    if dst is None:
        return 0
    dst.mkdir(parents=True, exist_ok=True)
    if not (dst / "progress.json").exists():
        (dst / "progress.json").write_text(json.dumps(_identity(b), indent=1) + "\n")
    for name, needs in FILES:
        if (b.dir / name).exists() and not (dst / name).exists() and (needs is None or b.done(needs)):
            _atomic_copy(b.dir / name, dst / name)
    n = _save_segment(b, dst, "effects", tables.done_effect_chunks(b.con), _effects_rows)
    _save_segment(b, dst, "topup", tables.done_topup_chunks(b.con), topup_rows)
    return n
