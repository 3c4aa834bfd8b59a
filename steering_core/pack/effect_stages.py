"""The effect stages of a pack build (docs/design.md §Feature effects, §Generic response):

* ``control``: random unit directions measured like features → the generic response and hubs;
* ``effects``: every feature at its loss-matched α, paired with the unsteered twins, with an
  SE per effect and the specific effect (effect − generic response);
* ``stability``: a re-measurement with another seed (raw and specific top-10 overlap);
* ``reference``: a few features at the paper's budget with fresh seeds, scoring the pack's effects;
* ``neighbors``, ``approximator``, ``maps``: built on whichever basis (raw or specific) the
  stability stage found more stable.

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
from steering_core.measure.generic import GenericResponse, generic_response, self_in_top, top_overlap
from steering_core.pack import carry, tables
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
                spec: EffectSpec | None = None, seed: int | None = None) -> MeasureSetup:
    """What every chunk of a stage shares, for the builder's executor: the rollout spec and seed, the
    unsteered twin rows, where directions come from, and the α settings when α is loss-matched."""
    return MeasureSetup(label, spec or b.cfg.effects, b.cfg.seed if seed is None else seed, rows.cpu().numpy(),
                        source=source, ref_ids=ref_ids(b).cpu().numpy() if loss_match else None,
                        alpha=b.cfg.alpha if loss_match else None, control_seed=b.cfg.seed)


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
    kept in the work folder; the build's own also gives ``baseline.npy`` (their mean)."""
    spec = spec or b.cfg.effects
    seed = b.cfg.seed if seed is None else seed
    path = b.dir / f"{name}.npy"
    if not path.exists():
        b.log(f"measuring the unsteered baseline ({name})")
        rows = baseline_rows(b.model, b.sae, b.layer, spec, seed).cpu()
        _save_npy(path, rows.numpy().astype(np.float32))
        if name == "baseline_rows":
            _save_npy(b.dir / "baseline.npy", rows.mean(0).numpy())
    return torch.from_numpy(np.load(path))


def loss_matched(b: Builder, dirs: torch.Tensor):
    from steering_core.measure.alpha import loss_matched_alpha

    return loss_matched_alpha(b.model, ref_ids(b), b.layer, dirs, b.cfg.alpha.target_dce,
                              tolerance=b.cfg.alpha.tolerance, symmetric=b.cfg.alpha.symmetric)


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


def _sparse_sample(b: Builder, n: int, salt: int) -> tuple[list[int], torch.Tensor]:
    rows = tables.measured_sparse_features(b.con, b.cfg.dense_threshold)
    rng = np.random.default_rng(b.cfg.seed + salt)
    pick = sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False).tolist()) if rows else []
    return [rows[i][0] for i in pick], torch.tensor([rows[i][1] for i in pick], dtype=torch.float32)


def _remeasure(b: Builder, ids: list[int], alphas: torch.Tensor, spec: EffectSpec, seed: int, name: str,
               label: str) -> torch.Tensor:
    """Effects of features ``ids`` at their stored α with another seed (its own baseline rows)."""
    rows = base_rows(b, spec, seed, name)
    jobs = [ChunkJob(n, tuple(ids[i:i + CHUNK]), tuple(alphas[i:i + CHUNK].tolist()))
            for n, i in enumerate(range(0, len(ids), CHUNK))]
    out = []
    with Progress(max(1, len(ids)), label, log_path=b.log_path, show_bar=b.show_bar) as bar:
        for job, res in run_chunks(b, jobs, label, rows, loss_match=False, spec=spec, seed=seed):
            out.append(torch.from_numpy(res.effect))
            bar.update(len(job.ids))
    return torch.cat(out) if out else torch.zeros(0, b.sae.d_sae)


@stage("stability", needs=("effects",))
def stability(b: Builder) -> None:
    """Re-measure random non-dense features with another seed: how many of their top-10 effects
    come back (raw and specific), and how many features rank themselves in their own top 10."""
    ids, alphas = _sparse_sample(b, b.cfg.stability_features, 7)
    g = load_generic(b).mean
    again = _remeasure(b, ids, alphas, b.cfg.effects, b.cfg.seed + 1, "baseline_rows_stability", "stability")
    first = torch.from_numpy(np.asarray(np.load(b.dir / "effects.npy", mmap_mode="r")[ids])) if ids else again
    raw = top_overlap(first, again)
    spec = top_overlap(first - g, again - g)
    eff, live = effect_matrix(b)
    e = torch.from_numpy(eff)
    self_raw, self_spec = self_in_top(e, live), self_in_top(e - g, live)
    med = float(np.median(raw)) if raw else float("nan")
    med_s = float(np.median(spec)) if spec else float("nan")
    b.finish("stability", {"median_top10_overlap": med, "specific_median_top10_overlap": med_s},
             {"stability_median_top10_overlap": json.dumps(med), "stability_features": str(len(ids)),
              "stability_overlaps": json.dumps(raw), "self_in_top10_share": json.dumps(self_raw),
              "specific_stability_median_top10_overlap": json.dumps(med_s),
              "specific_stability_overlaps": json.dumps(spec), "specific_self_in_top10_share": json.dumps(self_spec)})


@stage("reference", needs=("stability",))
def reference(b: Builder) -> None:
    """Score the pack against a reference: random non-dense features measured again at the paper's
    budget with fresh seeds. Writes the median top-10 overlap (raw and specific) and the lists."""
    rc = b.cfg.reference
    ids, alphas = _sparse_sample(b, rc.features, 1000 + rc.seed_offset)
    spec = dataclasses.replace(b.cfg.effects, rollouts_per_prompt=rc.rollouts_per_prompt,
                               baseline_rollouts_per_prompt=rc.rollouts_per_prompt)
    ref = _remeasure(b, ids, alphas, spec, b.cfg.seed + rc.seed_offset, "baseline_rows_reference", "reference")
    g = load_generic(b).mean
    pack = torch.from_numpy(np.asarray(np.load(b.dir / "effects.npy", mmap_mode="r")[ids])) if ids else ref
    raw, spc = top_overlap(pack, ref), top_overlap(pack - g, ref - g)
    per = [{"feature": f, "overlap": o, "specific_overlap": s,
            "pack_top10": pack[r].topk(10).indices.tolist(), "reference_top10": ref[r].topk(10).indices.tolist(),
            "pack_specific_top10": (pack[r] - g).topk(10).indices.tolist(),
            "reference_specific_top10": (ref[r] - g).topk(10).indices.tolist()}
           for r, (f, o, s) in enumerate(zip(ids, raw, spc))]
    med = float(np.median(raw)) if raw else float("nan")
    med_s = float(np.median(spc)) if spc else float("nan")
    b.finish("reference", {"median": med, "specific_median": med_s},
             {"reference_top10_overlap_median": json.dumps(med),
              "specific_reference_top10_overlap_median": json.dumps(med_s),
              "reference_features": json.dumps(per), "reference_rollouts": str(spec.rows_per_vector)})


@stage("neighbors", needs=("reference",))
def neighbors(b: Builder) -> None:
    """Per feature: cosine-similar decoder rows, effect-similar features (on the stabler basis), and
    its actions (the sources whose raw or specific effects raise it most)."""
    k = b.cfg.neighbors
    w = directions(b, list(range(b.sae.d_sae)))
    basis = chosen_basis(b)
    rows = []
    cos = w @ w.T
    cos.fill_diagonal_(-2)
    v, i = cos.topk(min(k, cos.shape[1] - 1), -1)
    live_raw, live = effect_matrix(b)
    live_set = set(live)
    for f in range(cos.shape[0]):
        if f in live_set:
            rows += [("cosine", f, int(i[f, j]), float(v[f, j]), j, None) for j in range(v.shape[1])]
    eff, _ = effect_matrix(b, basis)
    e = torch.from_numpy(eff)
    en = e / e.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    es = en @ en.T
    es.fill_diagonal_(-2)
    if es.shape[0] > 1:
        v, i = es.topk(min(k, es.shape[1] - 1), -1)
        for r, f in enumerate(live):
            rows += [("effect_similar", f, live[int(i[r, j])], float(v[r, j]), j, None) for j in range(v.shape[1])]
    g = load_generic(b)
    se = torch.from_numpy(np.asarray(np.load(b.dir / "effects_se.npy", mmap_mode="r")[live]))
    raw_t = torch.from_numpy(live_raw)
    for kind, m, m_se in (("action", raw_t, se), ("action_specific", raw_t - g.mean, (se.square() + g.se.square()).sqrt())):
        v, i = m.T.topk(min(k, m.shape[0]), -1)  # [d_sae targets, k]
        for t in range(m.shape[1]):
            rows += [(kind, t, live[int(i[t, j])], float(v[t, j]), j, float(m_se[int(i[t, j]), t]))
                     for j in range(v.shape[1]) if v[t, j] > 0]
    with transaction(b.con):
        tables.replace_neighbors(b.con, rows)
        set_meta(b.con, {"effect_basis": basis})
        mark_stage(b.con, "neighbors", {"rows": len(rows), "basis": basis})
    b.log(f"stage neighbors done ({len(rows)} rows, effect-similar on {basis} effects)")


@stage("approximator", needs=("neighbors",))
def approximator(b: Builder) -> None:
    from steering_core.measure.approximator import fit_approximator

    basis = chosen_basis(b)
    eff, live = effect_matrix(b, basis)
    ap = fit_approximator(directions(b, live), torch.from_numpy(eff), seed=b.cfg.seed)
    ap.save(b.dir / "approximator.safetensors")
    b.finish("approximator", {"r2_heldout": ap.r2_heldout, "ridge": ap.ridge, "basis": basis},
             {"approximator_r2_heldout": json.dumps(ap.r2_heldout), "approximator_ridge": json.dumps(ap.ridge),
              "approximator_pairs": str(ap.n_train), "approximator_basis": basis})


@stage("maps", needs=("neighbors",))
def maps(b: Builder) -> None:
    """2-D UMAP maps of the decoder directions and of the effects, and clusters of the directions."""
    from steering_core.pack.maps import clusters, map_method, umap_2d

    t0 = time.perf_counter()
    eff, live = effect_matrix(b, chosen_basis(b))
    w = directions(b, live).numpy()
    dec = umap_2d(w, b.cfg.seed)
    effm = umap_2d(eff, b.cfg.seed)
    cl = clusters(w, seed=b.cfg.seed)
    rows = [(float(dec[r, 0]), float(dec[r, 1]), float(effm[r, 0]), float(effm[r, 1]), int(cl[r]), f)
            for r, f in enumerate(live)]
    with transaction(b.con):
        tables.set_map_coordinates(b.con, rows)
        set_meta(b.con, {"umap_build_s": f"{time.perf_counter() - t0:.1f}", "maps_method": map_method(len(rows))})
        mark_stage(b.con, "maps", {"points": len(rows)})
    b.log("stage maps done")
