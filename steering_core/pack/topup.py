"""The ``topup`` stage: more rollouts only where a feature's top-10 is still open (docs/design.md
§Adaptive budget).

After the effects stage has measured every feature on ``R`` rollouts per prompt, the features whose
top-``top`` list is contested (more than ``contested_over`` targets within ``z`` SE of its
boundary, :func:`steering_core.measure.allocation.contested_targets`) are measured again on
rollouts ``R … R2 − 1`` of each prompt, at the α the effects stage found, and pooled with their
first measurement. With the same seeds per rollout, the pooled effect is what one ``R2``-rollout
measurement gives (tested); the other features keep their ``R``-rollout effects, and every stored
SE says which budget a value had.

Resuming: the first pass of every chosen feature is snapshotted once (``topup_first.npz``) before
any row of ``effects.npy`` is pooled, and each chunk's extra rollouts are kept in
``topup_extra.npy`` and committed with their pooled table rows in one transaction
(``topup_chunks``), so a killed build redoes exactly the missing chunks and pools them from the
same snapshot. The extra rollouts are also carried in ``topup-*.npz`` progress segments, so the
stage continues on another machine (:mod:`steering_core.pack.carry`)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from steering_core.measure.allocation import contested_targets, pool, topup_threshold
from steering_core.measure.effects import EffectEstimate
from steering_core.pack import carry, tables
from steering_core.pack.config import PackConfigError
from steering_core.pack.distributed.work import ChunkJob
from steering_core.pack.effect_stages import (
    CHUNK,
    _crash_point,
    _memmap,
    base_rows,
    effect_rows,
    load_generic,
    run_chunks,
)
from steering_core.pack.stages import stage
from steering_core.progress import Progress
from steering_core.storage.db import transaction

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder

SNAPSHOT = "topup_first.npz"
EXTRA, EXTRA_SE = "topup_extra.npy", "topup_extra_se.npy"


@dataclass
class FirstPass:
    """The chosen features (``ids``, ascending) with their first-pass effects and SEs, every
    feature's contested count (what the choice was made on) and the count they exceed."""

    ids: np.ndarray
    effect: np.ndarray
    se: np.ndarray
    contested: np.ndarray
    over: int
    rule: str  # the settings it was made with (:func:`rule_of`), as JSON


def rule_of(b: Builder) -> str:
    """The settings a top-up depends on, as JSON: a snapshot or carried chunk made with others is
    refused, not mixed (chunks pooled at 448 among chunks pooled at 336 would be neither)."""
    t = b.cfg.topup
    return json.dumps({"first_rollouts_per_prompt": b.cfg.effects.rollouts_per_prompt, **dataclasses.asdict(t)},
                      sort_keys=True)


def first_pass(b: Builder) -> FirstPass | None:
    """The top-up's snapshot, once the stage has taken it."""
    path = b.dir / SNAPSHOT
    if not path.exists():
        return None
    with np.load(path) as z:
        if "rule" not in z.files:
            raise PackConfigError(f"{path} was written by an older version of the top-up; run "
                                  "`python -m steering_core.pack redo CONFIG topup` to start the top-up afresh.")
        return FirstPass(z["ids"], z["effect"], z["se"], z["contested"], int(z["over"]), str(z["rule"]))


def _redo_hint(b: Builder) -> str:
    return f"`python -m steering_core.pack redo CONFIG topup` (it puts the first pass back) for {b.cfg.name}"


def choose(b: Builder) -> FirstPass:
    """Pick the contested features from the effects stage's matrices and snapshot their first pass
    (once: a resumed stage reuses the snapshot, since ``effects.npy`` may hold pooled rows by then)."""
    snap = first_pass(b)
    if snap is not None:
        if snap.rule != rule_of(b):
            raise PackConfigError(f"The top-up in {b.dir} was started with {snap.rule}; this config asks for "
                                  f"{rule_of(b)}. Set the config back, or run {_redo_hint(b)}.")
        return snap
    pooled = tables.done_topup_chunks(b.con)
    if pooled:
        raise PackConfigError(f"{len(pooled)} top-up chunks are pooled into effects.npy but {b.dir / SNAPSHOT} "
                              "(their first pass) is gone; rebuild the effects from the progress folder or afresh.")
    for name in (EXTRA, EXTRA_SE, "topup_seconds.json"):  # left by a top-up that was reset half-way
        (b.dir / name).unlink(missing_ok=True)
    t = b.cfg.topup
    eff = np.load(b.dir / "effects.npy", mmap_mode="r")
    se = np.load(b.dir / "effects_se.npy", mmap_mode="r")
    n_con = torch.cat([contested_targets(torch.from_numpy(np.array(eff[i:i + 1024])),  # row blocks: a 16k SAE's
                                         torch.from_numpy(np.array(se[i:i + 1024])), t.top, t.z)  # matrix is 1 GiB
                       for i in range(0, eff.shape[0], 1024)])
    over = topup_threshold(n_con, t.contested_over, t.share)
    n_con = n_con.numpy()
    ids = np.nonzero(n_con > over)[0].astype(np.int64)
    tmp = b.dir / (SNAPSHOT + ".tmp.npz")
    np.savez(tmp, ids=ids, effect=np.array(eff[ids]), se=np.array(se[ids]), contested=n_con.astype(np.int64), over=over,
             rule=np.array(rule_of(b)))
    tmp.replace(b.dir / SNAPSHOT)
    b.log(f"top-up: {len(ids)} of {len(n_con)} features have more than {over} contested targets"
          + (f" (raised from {t.contested_over} to top up at most {t.share:.0%})" if over > t.contested_over else ""))
    return first_pass(b)


def topped_up(b: Builder) -> list[int]:
    """The features the top-up chose (none before it ran, or with the top-up off)."""
    snap = first_pass(b)
    return [] if snap is None else snap.ids.tolist()


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)]


def topup_rows(b: Builder, chunks: list[int]) -> carry.ChunkRows:
    """The extra rollouts' effects of committed top-up ``chunks``, for a progress segment."""
    snap = first_pass(b)
    parts = _chunks(snap.ids.tolist())
    ids = [parts[c] for c in chunks]
    pos = [c * CHUNK + j for c in chunks for j in range(len(parts[c]))]
    flat = [i for part in ids for i in part]
    return carry.ChunkRows(ids, np.array(np.load(b.dir / EXTRA, mmap_mode="r")[pos]),
                           np.array(np.load(b.dir / EXTRA_SE, mmap_mode="r")[pos]),
                           np.array(tables.feature_alphas(b.con, flat), dtype=np.float32),
                           np.full(len(flat), np.nan, dtype=np.float32), {"rule": np.array(snap.rule)})


def reset_topup(b: Builder) -> None:
    """Undo a top-up (``redo topup``): the first pass back into ``effects.npy`` and the effects
    table, the chunk records and the stage's files gone. Safe to repeat after a kill: the
    snapshot is removed last."""
    snap = first_pass(b)
    if snap is None:
        if tables.done_topup_chunks(b.con):
            raise PackConfigError(f"Top-up chunks are pooled into {b.dir / 'effects.npy'} but the first-pass snapshot "
                                  "is gone, so they cannot be undone; rebuild the effects from the progress folder.")
        return
    ids = snap.ids.tolist()
    if ids:
        d_sae = b.sae.d_sae
        mat, mat_se = _memmap(b.dir / "effects.npy", (d_sae, d_sae)), _memmap(b.dir / "effects_se.npy", (d_sae, d_sae))
        mat[ids], mat_se[ids] = snap.effect, snap.se
        mat.flush()
        mat_se.flush()
        out = effect_rows(ids, torch.from_numpy(snap.effect), torch.from_numpy(snap.se), load_generic(b),
                          base_rows(b).mean(0), b.cfg.top_effects)
    with transaction(b.con):
        if ids:
            tables.replace_effect_rows(b.con, ids, out)
        b.con.execute("DELETE FROM topup_chunks")
    for name in (EXTRA, EXTRA_SE, "topup_seconds.json", SNAPSHOT):
        (b.dir / name).unlink(missing_ok=True)
    b.log(f"top-up reset: the first pass of {len(ids)} features is back")


#: The stages that read the pooled effects: done before a top-up, they would be stale after it.
LATER = ("stability", "reference", "neighbors", "approximator", "maps", "ship")


@stage("topup", needs=("effects",), reset=reset_topup)
def run_topup(b: Builder) -> None:
    """Measure the contested features on the extra rollouts and pool; a no-op (recorded as such)
    when ``[topup] rollouts_per_prompt`` is 0."""

    t, spec, d_sae = b.cfg.topup, b.cfg.effects, b.sae.d_sae
    r1, r2 = spec.rollouts_per_prompt, t.rollouts_per_prompt
    if not r2:
        if (b.dir / SNAPSHOT).exists() or tables.done_topup_chunks(b.con):
            raise PackConfigError(f"This config turns the top-up off, but {b.dir} holds a started one; run "
                                  f"{_redo_hint(b)}, or set [topup] back.")
        b.finish("topup", {"features": 0}, {"effects_topup": json.dumps({"rollouts_per_prompt": 0}),
                                           "effects_topped_up": "[]"})
        return
    stale = [name for name in LATER if b.done(name)]
    if stale:
        raise PackConfigError(f"Stages {', '.join(stale)} are done on the effects before the top-up and would not see "
                              f"it; run `python -m steering_core.pack redo CONFIG {' '.join(stale)}` first.")
    snap = choose(b)
    ids = snap.ids.tolist()
    chunks = _chunks(ids)
    rows = base_rows(b)
    base, g = rows.mean(0), load_generic(b)
    mat = _memmap(b.dir / "effects.npy", (d_sae, d_sae))
    mat_se = _memmap(b.dir / "effects_se.npy", (d_sae, d_sae))
    shape = (max(1, len(ids)), d_sae)
    extra, extra_se = _memmap(b.dir / EXTRA, shape), _memmap(b.dir / EXTRA_SE, shape)
    if extra.shape != shape or extra_se.shape != shape:
        raise PackConfigError(f"{b.dir / EXTRA} holds {extra.shape[0]} rows, this top-up {shape[0]}; run {_redo_hint(b)}.")
    where = {f: r for r, f in enumerate(ids)}

    def commit(job: ChunkJob, res) -> None:
        ci, fids = job.index, list(job.ids)
        pos = [where[f] for f in fids]
        extra[pos], extra_se[pos] = res.effect, res.se
        extra.flush()
        extra_se.flush()
        pooled = pool(EffectEstimate(torch.from_numpy(snap.effect[pos]), torch.from_numpy(snap.se[pos])), r1,
                      EffectEstimate(torch.from_numpy(res.effect), torch.from_numpy(res.se)), r2 - r1)
        e = carry.to_stored(pooled.effect.numpy(), "pooled effect")
        s = carry.to_stored(pooled.se.numpy(), "pooled standard error")
        mat[fids], mat_se[fids] = e, s
        mat.flush()
        mat_se.flush()
        _crash_point(f"topup:{ci}:before_commit")
        out = effect_rows(fids, torch.from_numpy(e), torch.from_numpy(s), g, base, b.cfg.top_effects)
        with transaction(b.con):
            tables.write_topup_chunk(b.con, ci, fids, out)
        _crash_point(f"topup:{ci}:after_commit")

    done = tables.done_topup_chunks(b.con)
    secs = carry.chunk_seconds(b, "topup")
    for job, res, sec in carry.carried_chunks(b, done, "topup", expect={"rule": snap.rule}):
        if job.index >= len(chunks) or list(job.ids) != chunks[job.index]:
            raise PackConfigError(f"Carried top-up chunk {job.index} holds features {list(job.ids)}, this build chose "
                                  f"{chunks[job.index] if job.index < len(chunks) else 'no such chunk'}; move the "
                                  "topup-*.npz segments out of the progress folder to measure them here.")
        commit(job, res)
        secs[job.index] = sec
        done.add(job.index)
    carry.record_seconds(b, secs, "topup")
    alphas = tables.feature_alphas(b.con, ids)
    jobs = [ChunkJob(ci, tuple(c), tuple(alphas[ci * CHUNK:ci * CHUNK + len(c)]))
            for ci, c in enumerate(chunks) if ci not in done]
    extra_spec = dataclasses.replace(spec, rollouts_per_prompt=r2 - r1)
    t0 = time.perf_counter()
    with Progress(max(1, len(chunks)), "top-up", initial=len(done), log_path=b.log_path, show_bar=b.show_bar) as bar:
        for n, (job, res) in enumerate(run_chunks(b, jobs, "topup", rows, loss_match=False, spec=extra_spec,
                                                  first=r1), 1):
            res.effect, res.se = carry.to_stored(res.effect, "effect"), carry.to_stored(res.se, "standard error")
            commit(job, res)
            now = time.perf_counter()
            secs[job.index], t0 = now - t0, now
            carry.record_seconds(b, secs, "topup")
            if n % max(1, b.cfg.progress_every) == 0:
                carry.save_progress(b)
            bar.update(1)
    carry.save_progress(b)
    timed = [v for v in secs.values() if np.isfinite(v)]
    per = sum(timed) / max(1, sum(len(chunks[c]) for c in secs if np.isfinite(secs[c]))) if timed else None
    n_p = len(spec.prompts)
    mean_rollouts = n_p * (r1 + (r2 - r1) * len(ids) / d_sae)
    b.finish("topup", {"features": len(ids), "mean_rollouts": mean_rollouts},
             {"effects_topup": json.dumps({**dataclasses.asdict(t), "contested_over_effective": snap.over}),
              "effects_topped_up": json.dumps(ids),
              "effects_topup_rollouts": str(n_p * r2), "effects_mean_rollouts": f"{mean_rollouts:.1f}",
              **({"topup_seconds_per_feature": f"{per:.2f}"} if per is not None else {})})
