"""The stages built on the measured effects: per-feature neighbour lists and actions, the
effect approximator and the 2-D maps, each on whichever basis (raw or specific) the stability
stage found more stable (docs/design.md §Feature effects)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

import steering_core.pack.check_stages  # noqa: F401  (declares stability and reference, which these need)
from steering_core.pack import tables
from steering_core.pack.effect_stages import chosen_basis, directions, effect_matrix, load_generic
from steering_core.pack.stages import stage
from steering_core.pack.tables import mark_stage, set_meta
from steering_core.storage.db import transaction

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder


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
    b.finish("approximator", {"r2_heldout": ap.r2_heldout, "r2_heldout_se": ap.r2_heldout_se, "ridge": ap.ridge,
                              "basis": basis},
             {"approximator_r2_heldout": json.dumps(ap.r2_heldout),
              "approximator_r2_heldout_se": json.dumps(ap.r2_heldout_se), "approximator_ridge": json.dumps(ap.ridge),
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
