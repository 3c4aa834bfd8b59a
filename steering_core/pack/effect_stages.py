"""The measuring stages of a pack build (docs/design.md §Feature effects, §Generic response), and
the helpers every later effect stage shares:

* ``control``: random unit directions measured like features → the generic response and hubs;
* ``effects``: every feature at its loss-matched α, paired with the unsteered twins, with an
  SE per effect and the specific effect (effect − generic response).

Then, each in its own module and declared in this order: ``topup`` (more rollouts where a top-10
is contested, :mod:`~steering_core.pack.topup`), ``stability`` and ``reference``
(:mod:`~steering_core.pack.check_stages`), and ``neighbors``, ``approximator`` and ``maps``
(:mod:`~steering_core.pack.derived_stages`).

Long stages commit per chunk with their rows, so a killed build resumes at the first missing chunk
and ends with the same tables as an uninterrupted one. The chunks themselves are measured by the
builder's executor (:mod:`steering_core.pack.distributed`): in this process, or on Ray workers;
either way results come back in chunk order and only this process writes."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from steering_core.measure.effects import EffectSpec, baseline_rows, relative_effect
from steering_core.measure.generic import GenericResponse, generic_response
from steering_core.model.precision import dtype_name
from steering_core.pack import carry, sinks, tables  # noqa: F401  (sinks: registers its stage after stats)
from steering_core.pack.corpus import atomic_write_bytes
from steering_core.pack.distributed.work import ChunkJob, MeasureSetup, control_vectors, unit_rows
from steering_core.pack.stages import stage
from steering_core.pack.tables import mark_stage, set_meta
from steering_core.progress import Progress
from steering_core.storage.db import transaction

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder

#: Features measured per committed chunk (their α is searched in one batch).
CHUNK = 8


def ref_ids(b: Builder) -> torch.Tensor:
    """Held-out reference windows on which each direction's α is loss-matched. Saved on first use
    (``alpha_ref.npy``), so a later corpus rebuild leaves every α, and so every effect, unchanged."""
    path = b.dir / "alpha_ref.npy"
    if not path.exists():
        c = b.corpus
        wins = np.nonzero(c.heldout)[0][: b.cfg.alpha.ref_windows]
        _save_npy(path, np.ascontiguousarray(c.tokens[wins, : b.cfg.alpha.ref_tokens]))
    return torch.from_numpy(np.load(path)).to(b.model.device)


def directions(b: Builder, ids: list[int]) -> torch.Tensor:
    """Unit decoder rows of features ``ids``: the steering directions whose effects are measured
    (on the CPU, where the stages that read them here work)."""
    return unit_rows(b.sae, ids).cpu()


def control_directions(b: Builder) -> torch.Tensor:
    """The control stage's random unit directions (the same ones on every call for a seed)."""
    return control_vectors(b.model.d_model, b.cfg.seed, range(b.cfg.control.directions))


def chunk_setup(b: Builder, label: str, rows: torch.Tensor, source: str = "decoder", loss_match: bool = True,
                spec: EffectSpec | None = None, seed: int | None = None, first: int = 0) -> MeasureSetup:
    """What every chunk of a stage shares, for the builder's executor: the rollout spec and seed, the
    unsteered twin rows, where directions come from, and the α settings when α is loss-matched."""
    return MeasureSetup(label, spec or b.cfg.effects, b.cfg.seed if seed is None else seed, rows.cpu().numpy(),
                        source=source, ref_ids=ref_ids(b).cpu().numpy() if loss_match else None,
                        alpha=b.cfg.alpha if loss_match else None, control_seed=b.cfg.seed, first_rollout=first)


def run_chunks(b: Builder, jobs: list[ChunkJob], label: str, rows: torch.Tensor, **setup):
    """``(job, result)`` for each chunk, in job order, from the builder's executor (nothing is set
    up when every chunk is done already)."""
    return b.executor.map(b, chunk_setup(b, label, rows, **setup), jobs) if jobs else iter(())


def _save_npy(path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def base_rows(b: Builder, spec: EffectSpec | None = None, seed: int | None = None, name: str = "baseline_rows"
              ) -> torch.Tensor:
    """Unsteered per-row feature means (the twins of every steered row), measured once per seed and
    kept in the work folder; the build's own also gives ``baseline.npy`` (their mean).

    ``{name}.json`` records the spec, seed and precision they were measured with: rows kept from
    other settings (a config edited and redone) would pair 6-token steered rollouts with 4-token
    twins, so they are measured again. Rows from before the record existed are kept as they are."""
    spec = spec or b.cfg.effects
    seed = b.cfg.seed if seed is None else seed
    path = b.dir / f"{name}.npy"
    made = {"spec": json.loads(json.dumps(spec.to_dict())), "seed": int(seed), "precision": dtype_name(b.model.dtype)}
    record = path.with_suffix(".json")
    if path.exists() and record.exists() and json.loads(record.read_text()) != made:
        b.log(f"{name}: measured with other settings than these; measuring the unsteered baseline again")
        path.unlink()
    if not path.exists():
        b.log(f"measuring the unsteered baseline ({name})")
        rows = baseline_rows(b.model, b.sae, b.layer, spec, seed).cpu()
        _save_npy(path, rows.numpy().astype(np.float32))
        if name == "baseline_rows":
            _save_npy(b.dir / "baseline.npy", rows.mean(0).numpy())
        atomic_write_bytes(record, json.dumps(made).encode())
    return torch.from_numpy(np.load(path))


def loss_matched(b: Builder, dirs: torch.Tensor):
    from steering_core.measure.alpha import loss_matched_alpha

    return loss_matched_alpha(b.model, ref_ids(b), b.layer, dirs, b.cfg.alpha.target_dce,
                              tolerance=b.cfg.alpha.tolerance, symmetric=b.cfg.alpha.symmetric,
                              refine=b.cfg.alpha.refine)


def _memmap(path, shape) -> np.memmap:
    return np.lib.format.open_memmap(path, mode="r+" if path.exists() else "w+", dtype=np.float32, shape=shape)


def load_generic(b: Builder) -> GenericResponse:
    z = np.load(b.dir / "generic.npz")
    return GenericResponse(torch.from_numpy(z["mean"]), torch.from_numpy(z["se"]), torch.from_numpy(z["hub_share"]),
                           int(z["n"]), int(z["top"]))


@stage("control", needs=("stats",))
def control(b: Builder) -> None:
    """Measure random unit directions exactly as features are measured; their mean effect is the
    generic response, and targets many of them raise are hubs."""
    cc, d_sae = b.cfg.control, b.sae.d_sae
    n = cc.directions
    rows = base_rows(b)
    eff = _memmap(b.dir / "control_effects.npy", (n, d_sae))
    done_path = b.dir / "control_done.json"
    done = set(json.loads(done_path.read_text())) if done_path.exists() else set()
    chunks = [list(range(i, min(n, i + CHUNK))) for i in range(0, n, CHUNK)]
    alphas = np.zeros(n, dtype=np.float64)
    jobs = [ChunkJob(ci, tuple(ids)) for ci, ids in enumerate(chunks) if ci not in done]
    with Progress(len(chunks), "control", initial=len(done), log_path=b.log_path, show_bar=b.show_bar) as bar:
        for job, res in run_chunks(b, jobs, "control", rows, source="control"):
            ids = list(job.ids)
            eff[ids] = res.effect
            eff.flush()
            alphas[ids] = res.alpha
            done.add(job.index)
            done_path.write_text(json.dumps(sorted(done)))
            bar.update(1)
    g = generic_response(torch.from_numpy(np.array(eff)), top=cc.top)
    np.savez(b.dir / "generic.tmp.npz", mean=g.mean.numpy(), se=g.se.numpy(), hub_share=g.hub_share.numpy(),
             n=g.n_directions, top=g.top)
    (b.dir / "generic.tmp.npz").replace(b.dir / "generic.npz")
    hubs = g.hubs(cc.hub_share)
    rows_out = [(t, float(g.mean[t]), float(g.se[t]), float(g.hub_share[t]), bool(hubs[t])) for t in range(d_sae)]
    with transaction(b.con):
        tables.replace_generic(b.con, rows_out)
        set_meta(b.con, {"control_directions": str(n), "control_hubs": str(int(hubs.sum())),
                         "control_hub_share": json.dumps(cc.hub_share), "control_top": str(g.top)})
        mark_stage(b.con, "control", {"directions": n, "hubs": int(hubs.sum())})
    carry.save_progress(b)
    b.log(f"stage control done: {n} random directions, {int(hubs.sum())} hub targets")


def effect_rows(ids: list[int], eff: torch.Tensor, se: torch.Tensor, g: GenericResponse, base: torch.Tensor,
                k: int) -> list[tuple]:
    """The stored rows of a chunk: per source, the union of its top-``k`` raw and top-``k`` specific
    effects (by magnitude), each with both values, both SEs and both ranks (NULL outside a list)."""
    spec, spec_se = eff - g.mean, (se.square() + g.se.square()).sqrt()
    kk = min(k, eff.shape[-1])
    raw_idx = eff.abs().topk(kk, -1).indices
    sp_idx = spec.abs().topk(kk, -1).indices
    rel = relative_effect(eff, base)
    out = []
    for r, f in enumerate(ids):
        raw_rank = {int(t): j for j, t in enumerate(raw_idx[r])}
        sp_rank = {int(t): j for j, t in enumerate(sp_idx[r])}
        for t in sorted(set(raw_rank) | set(sp_rank)):
            out.append((f, t, float(eff[r, t]), float(rel[r, t]), raw_rank.get(t), float(se[r, t]),
                        float(spec[r, t]), float(spec_se[r, t]), sp_rank.get(t)))
    return out


def _crash_point(name: str) -> None:
    """Test hook: ``STEERING_PACK_CRASH_AT=name`` SIGKILLs the build right here."""
    from steering_core.storage.crashpoints import crash_point

    crash_point(name, env="STEERING_PACK_CRASH_AT")


@stage("effects", needs=("control",))
def effects(b: Builder) -> None:
    """Steer with every feature at its loss-matched α and measure the change in every feature's
    activation against the unsteered twins; commits per chunk of feature ids. Dead features are
    measured too (their decoder rows are still directions), so the chunks never depend on the
    corpus statistics and a corpus rebuild leaves them valid."""
    spec, d_sae = b.cfg.effects, b.sae.d_sae
    every = list(range(d_sae))
    chunks = [every[i:i + CHUNK] for i in range(0, len(every), CHUNK)]
    rows = base_rows(b)
    base = rows.mean(0)
    g = load_generic(b)
    mat = _memmap(b.dir / "effects.npy", (d_sae, d_sae))
    mat_se = _memmap(b.dir / "effects_se.npy", (d_sae, d_sae))
    done = tables.done_effect_chunks(b.con)
    with transaction(b.con):
        set_meta(b.con, {"effects_rollouts": json.dumps(spec.to_dict()), "alpha_spec": json.dumps(
            dataclasses.asdict(b.cfg.alpha)), "effects_features_per_call": str(spec.vectors_per_call),
            "effects_baseline_rollouts": str(len(spec.prompts) * spec.baseline_rollouts_per_prompt),
            "effects_steered_rollouts": str(spec.rows_per_vector), "effects_paired": "true"})
        tables.set_baseline(b.con, base.tolist())
    secs = carry.chunk_seconds(b)
    for job, res, sec in carry.carried_chunks(b, done):  # measured on another machine: committed as they are
        _commit_effects(b, job, res, g, base, mat, mat_se)
        secs[job.index] = sec
        done.add(job.index)
    carry.record_seconds(b, secs)
    jobs = [ChunkJob(ci, tuple(ids)) for ci, ids in enumerate(chunks) if ci not in done]
    save_every = max(1, b.cfg.progress_every)
    t0 = time.perf_counter()
    with Progress(len(chunks), "effects", initial=len(done), log_path=b.log_path, show_bar=b.show_bar) as bar:
        for n, (job, res) in enumerate(run_chunks(b, jobs, "effects", rows), 1):
            res.effect, res.se = carry.to_stored(res.effect, "effect"), carry.to_stored(res.se, "standard error")
            _commit_effects(b, job, res, g, base, mat, mat_se)
            now = time.perf_counter()
            secs[job.index], t0 = now - t0, now
            carry.record_seconds(b, secs)
            if n % save_every == 0:
                carry.save_progress(b)
            bar.update(1)
    carry.save_progress(b)
    timed = [secs[c] for c in range(len(chunks)) if np.isfinite(secs.get(c, float("nan")))]
    per = sum(timed) / (len(timed) * CHUNK) if timed else None
    b.finish("effects", {"chunks": len(chunks), "features": d_sae},
             {"effects_measured_features": str(d_sae),
              **({"effects_seconds_per_feature": f"{per:.2f}"} if per is not None else {})})


def _commit_effects(b: Builder, job: ChunkJob, res, g: GenericResponse, base: torch.Tensor, mat, mat_se) -> None:
    """Write one chunk (measured here or carried from another machine): its rows of the effect and SE
    matrices, then its table rows and completion record in one transaction."""
    ci, ids = job.index, list(job.ids)
    mat[ids] = res.effect
    mat_se[ids] = res.se
    mat.flush()
    mat_se.flush()
    _crash_point(f"effects:{ci}:before_commit")
    out = effect_rows(ids, torch.from_numpy(res.effect), torch.from_numpy(res.se), g, base, b.cfg.top_effects)
    with transaction(b.con):
        tables.write_effect_chunk(b.con, ci, ids, out, res.alpha.tolist(), res.dce.tolist())
    _crash_point(f"effects:{ci}:after_commit")


def effect_matrix(b: Builder, basis: str = "raw") -> tuple[np.ndarray, list[int]]:
    """The measured effects of the live features (rows) on every feature, and those features' ids;
    ``basis="specific"`` subtracts the generic response."""
    live = tables.live_feature_ids(b.con)
    mat = np.asarray(np.load(b.dir / "effects.npy", mmap_mode="r")[live])
    if basis == "specific":
        mat = mat - load_generic(b).mean.numpy()[None]
    return mat, live


def chosen_basis(b: Builder) -> str:
    """The basis (raw or specific) the stability stage found more stable; specific on a tie."""
    meta = tables.get_meta(b.con)
    raw = float(json.loads(meta.get("stability_median_top10_overlap", "0")))
    spec = float(json.loads(meta.get("specific_stability_median_top10_overlap", "0")))
    return "specific" if spec >= raw else "raw"
