"""The stages of a pack build, each one function declared with the stages it needs.

Adding a stage is one decorated function here: ``@stage("name", needs=("stats",))``. The run
order is derived from the declarations (see :class:`StageRegistry`). A stage body gets the
:class:`~steering_core.pack.builder.Builder` (model, corpus, activations, SAE, database, log) and
must record its own completion (``b.finish`` or ``mark_stage``) in the same transaction as its
outputs, only once they are durable; that is what makes a build resumable after ``kill -9``
(docs/design.md §Storage contract)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steering_core.measure.effects import measure_baseline, relative_effect, steered_feature_means, top_effects
from steering_core.pack import tables
from steering_core.pack.config import PackConfigError, resolve_path
from steering_core.pack.corpus import Corpus, build_corpus
from steering_core.pack.registry import StageRegistry
from steering_core.pack.tables import mark_stage, set_meta
from steering_core.progress import Progress
from steering_core.storage.db import transaction

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder

#: The pack pipeline; ``Builder`` runs it in ``PIPELINE.order()``.
PIPELINE = StageRegistry()
stage = PIPELINE.stage


@stage("corpus")
def corpus(b: Builder) -> None:
    path = build_corpus(b.model, b.cfg.corpus, b.dir, b.cfg.seed, b.log_path, b.show_bar)
    c = Corpus.load(path)
    gen_tok = int((c.source == 0).sum() * c.tokens.shape[1])
    b.finish("corpus", {"tokens": c.n_tokens}, {
        "corpus_tokens": str(c.n_tokens), "corpus_generated_tokens": str(gen_tok),
        "corpus_package_tokens": str(c.n_tokens - gen_tok), "corpus_windows": str(c.tokens.shape[0]),
        "corpus_heldout_windows": str(int(c.heldout.sum())),
    })


@stage("activations", needs=("corpus",))
def activations(b: Builder) -> None:
    from steering_core.pack.sae_training import compute_activations

    compute_activations(b.model, b.corpus, b.layer, b.dir / "acts.npy", log_path=b.log_path, show_bar=b.show_bar)
    b.finish("activations")


@stage("sae", needs=("activations",))
def sae(b: Builder) -> None:
    """Train the SAE (``sae = "train"``), or copy the given one into the work folder."""
    from steering_core.model.saes import load_sae, save_sae

    if b.cfg.sae == "train":
        from steering_core.pack.sae_training import describe_training, train_sae

        trained = train_sae(b.model, b.corpus, b.acts, b.layer, b.cfg.sae_train, b.dir, b.cfg.seed, b.log_path)
        source = describe_training(b.cfg.sae_train)
    else:
        trained = load_sae(b.cfg.sae, b.model)
        tmp = b.dir / "sae.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_sae(trained, tmp)
        (tmp / "COMPLETE").write_text("ok")
        shutil.rmtree(b.dir / "sae", ignore_errors=True)
        tmp.rename(b.dir / "sae")
        source = b.cfg.sae
    b.forget_sae()
    if trained.d_in != b.model.d_model:
        raise PackConfigError(f"The SAE reads vectors of size {trained.d_in}, the model's residual has "
                              f"{b.model.d_model}.")
    b.finish("sae", {"d_sae": trained.d_sae}, {"sae_id": source, "d_sae": str(trained.d_sae),
                                               "sae_architecture": trained.architecture})


@stage("sae_eval", needs=("sae",))
def sae_eval(b: Builder) -> None:
    from steering_core.pack.sae_training import evaluate_sae

    m = evaluate_sae(b.model, b.sae, b.corpus, b.acts, b.layer)
    b.finish("sae_eval", m.to_dict(), {f"sae_{k}": json.dumps(v) for k, v in m.to_dict().items()})


@stage("stats", needs=("sae",))
def stats(b: Builder) -> None:
    from steering_core.model.embeddings import embed_texts
    from steering_core.pack.stats import feature_statistics

    st = feature_statistics(b.model, b.sae, b.corpus, b.acts, b.cfg.stats, b.log_path, b.show_bar)
    emb = embed_texts(st.labels)
    rows = [(i, st.labels[i], st.labels[i], "", float(st.density[i]), float(st.mean_act[i]), float(st.max_act[i]),
             bool(st.density[i] > 0), st.hist_counts[i].tolist(), float(st.max_act[i]), st.top_tokens[i],
             st.top_logits[i], st.bottom_logits[i]) for i in range(len(st.labels))]
    snips = [(s.feature_id, s.kind, s.rank, s.max_act, s.tokens, s.acts) for s in st.snippets]
    with transaction(b.con):
        tables.replace_features(b.con, rows, snips, [(i, emb[i].tolist()) for i in range(len(emb))])
        set_meta(b.con, {"stats_tokens": str(st.n_tokens),
                         "dead_fraction_corpus": json.dumps(float(1 - st.live.mean())),
                         "dense_features": str(int((st.density > b.cfg.dense_threshold).sum()))})
        mark_stage(b.con, "stats", {"live": int(st.live.sum())})
    b.log(f"stage stats done: {int(st.live.sum())} live of {len(st.labels)}")


# -- shared by the effect stages ---------------------------------------------------------------------


def ref_ids(b: Builder) -> torch.Tensor:
    """Held-out reference windows on which each feature's α is loss-matched."""
    c = b.corpus
    wins = np.nonzero(c.heldout)[0][: b.cfg.alpha.ref_windows]
    return torch.from_numpy(c.tokens[wins, : b.cfg.alpha.ref_tokens]).to(b.model.device)


def directions(b: Builder, ids: list[int]) -> torch.Tensor:
    """Unit decoder rows of features ``ids``: the steering directions whose effects are measured."""
    w = b.sae.W_dec.detach().float()[ids]
    return w / w.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def baseline(b: Builder) -> torch.Tensor:
    """The unsteered mean activation of every feature, measured once and kept in the work folder."""
    path = b.dir / "baseline.npy"
    if not path.exists():
        b.log("measuring the unsteered baseline")
        base = measure_baseline(b.model, b.sae, b.layer, b.cfg.effects, b.cfg.seed)
        tmp = b.dir / "baseline.tmp.npy"
        np.save(tmp, base.numpy())
        tmp.replace(path)
    return torch.from_numpy(np.load(path))


def effect_matrix(b: Builder) -> tuple[np.ndarray, list[int]]:
    """The measured effects of the live features (rows) on every feature, and those features' ids."""
    live = tables.live_feature_ids(b.con)
    mat = np.load(b.dir / "effects.npy", mmap_mode="r")
    return np.asarray(mat[live]), live


def _crash_point(name: str) -> None:
    """Test hook: ``STEERING_PACK_CRASH_AT=name`` SIGKILLs the build right here, so tests can
    prove that a kill at the worst moment loses nothing."""
    from steering_core.storage.crashpoints import crash_point

    crash_point(name, env="STEERING_PACK_CRASH_AT")


@stage("effects", needs=("stats",))
def effects(b: Builder) -> None:
    """Steer every live feature at its loss-matched α and measure the change in every feature's
    activation (docs/design.md §Feature effects); commits per chunk of features, so a resumed build
    continues at the first missing one."""
    from steering_core.measure.alpha import loss_matched_alpha

    spec, d_sae = b.cfg.effects, b.sae.d_sae
    live = tables.live_feature_ids(b.con)
    per = spec.vectors_per_call
    chunks = [live[i:i + per] for i in range(0, len(live), per)]
    base = baseline(b)
    ref = ref_ids(b)
    mat_path = b.dir / "effects.npy"
    mode = "r+" if mat_path.exists() else "w+"
    mat = np.lib.format.open_memmap(mat_path, mode=mode, dtype=np.float32, shape=(d_sae, d_sae))
    done = tables.done_effect_chunks(b.con)
    with transaction(b.con):
        set_meta(b.con, {"effects_rollouts": json.dumps(spec.to_dict()), "alpha_spec": json.dumps(
            dataclasses.asdict(b.cfg.alpha)), "effects_features_per_call": str(per),
            "effects_baseline_rollouts": str(len(spec.prompts) * spec.baseline_rollouts_per_prompt)})
        tables.set_baseline(b.con, base.tolist())
    k = b.cfg.top_effects
    with Progress(len(chunks), "effects", initial=len(done), log_path=b.log_path, show_bar=b.show_bar) as bar:
        for ci, ids in enumerate(chunks):
            if ci in done:
                continue
            dirs = directions(b, ids)
            a = loss_matched_alpha(b.model, ref, b.layer, dirs, b.cfg.alpha.target_dce,
                                   tolerance=b.cfg.alpha.tolerance, symmetric=b.cfg.alpha.symmetric)
            eff = steered_feature_means(b.model, b.sae, b.layer, dirs, a.alpha, spec, b.cfg.seed) - base.unsqueeze(0)
            mat[ids] = eff.numpy()
            mat.flush()
            _crash_point(f"effects:{ci}:before_commit")
            idx, val = top_effects(eff, k)
            rel = relative_effect(eff, base).gather(-1, idx)
            rows = [(ids[r], int(idx[r, j]), float(val[r, j]), float(rel[r, j]), j)
                    for r in range(len(ids)) for j in range(idx.shape[1])]
            with transaction(b.con):
                tables.write_effect_chunk(b.con, ci, ids, rows, a.alpha.tolist(), a.dce.tolist())
            _crash_point(f"effects:{ci}:after_commit")
            bar.update(1)
    b.finish("effects", {"chunks": len(chunks), "features": len(live)}, {"effects_measured_features": str(len(live))})


@stage("neighbors", needs=("effects",))
def neighbors(b: Builder) -> None:
    """Per feature: cosine-similar decoder rows, effect-similar features, and its actions (the
    sources whose effects raise it most)."""
    k = b.cfg.neighbors
    w = directions(b, list(range(b.sae.d_sae)))
    eff, live = effect_matrix(b)
    rows = []
    cos = w @ w.T
    cos.fill_diagonal_(-2)
    v, i = cos.topk(min(k, cos.shape[1] - 1), -1)
    live_set = set(live)
    for f in range(cos.shape[0]):
        if f in live_set:
            rows += [("cosine", f, int(i[f, j]), float(v[f, j]), j) for j in range(v.shape[1])]
    e = torch.from_numpy(eff)
    en = e / e.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    es = en @ en.T
    es.fill_diagonal_(-2)
    if es.shape[0] > 1:
        v, i = es.topk(min(k, es.shape[1] - 1), -1)
        for r, f in enumerate(live):
            rows += [("effect_similar", f, live[int(i[r, j])], float(v[r, j]), j) for j in range(v.shape[1])]
    v, i = e.T.topk(min(k, e.shape[0]), -1)  # [d_sae targets, k]
    for t in range(e.shape[1]):
        rows += [("action", t, live[int(i[t, j])], float(v[t, j]), j) for j in range(v.shape[1]) if v[t, j] > 0]
    with transaction(b.con):
        tables.replace_neighbors(b.con, rows)
        mark_stage(b.con, "neighbors", {"rows": len(rows)})
    b.log(f"stage neighbors done ({len(rows)} rows)")


@stage("approximator", needs=("effects",))
def approximator(b: Builder) -> None:
    from steering_core.measure.approximator import fit_approximator

    eff, live = effect_matrix(b)
    ap = fit_approximator(directions(b, live), torch.from_numpy(eff), seed=b.cfg.seed)
    ap.save(b.dir / "approximator.safetensors")
    b.finish("approximator", {"r2_heldout": ap.r2_heldout, "ridge": ap.ridge},
             {"approximator_r2_heldout": json.dumps(ap.r2_heldout), "approximator_ridge": json.dumps(ap.ridge),
              "approximator_pairs": str(ap.n_train)})


@stage("maps", needs=("effects",))
def maps(b: Builder) -> None:
    """2-D UMAP maps of the decoder directions and of the effects, and clusters of the directions."""
    from steering_core.pack.maps import clusters, umap_2d

    t0 = time.perf_counter()
    eff, live = effect_matrix(b)
    w = directions(b, live).numpy()
    dec = umap_2d(w, b.cfg.seed)
    effm = umap_2d(eff, b.cfg.seed)
    cl = clusters(w, seed=b.cfg.seed)
    rows = [(float(dec[r, 0]), float(dec[r, 1]), float(effm[r, 0]), float(effm[r, 1]), int(cl[r]), f)
            for r, f in enumerate(live)]
    with transaction(b.con):
        tables.set_map_coordinates(b.con, rows)
        set_meta(b.con, {"umap_build_s": f"{time.perf_counter() - t0:.1f}"})
        mark_stage(b.con, "maps", {"points": len(rows)})
    b.log("stage maps done")


@stage("stability", needs=("effects",))
def stability(b: Builder) -> None:
    """Re-measure random non-dense features with another seed: how many of their top-10
    effects come back, and how many features rank themselves in their own top 10."""
    rows = tables.measured_sparse_features(b.con, b.cfg.dense_threshold)
    rng = np.random.default_rng(b.cfg.seed + 7)
    pick = sorted(rng.choice(len(rows), size=min(b.cfg.stability_features, len(rows)), replace=False).tolist()) \
        if rows else []
    ids = [rows[i][0] for i in pick]
    alphas = torch.tensor([rows[i][1] for i in pick], dtype=torch.float32)
    base = baseline(b)
    mat = np.load(b.dir / "effects.npy", mmap_mode="r")
    overlaps = []
    per = b.cfg.effects.vectors_per_call
    for i in range(0, len(ids), per):
        sub = ids[i:i + per]
        eff2 = steered_feature_means(b.model, b.sae, b.layer, directions(b, sub), alphas[i:i + per],
                                     b.cfg.effects, b.cfg.seed + 1) - base.unsqueeze(0)
        for r, f in enumerate(sub):
            first = set(torch.from_numpy(np.array(mat[f])).topk(10).indices.tolist())
            again = set(eff2[r].topk(10).indices.tolist())
            overlaps.append(len(first & again))
    eff, live = effect_matrix(b)
    e = torch.from_numpy(eff)
    top10 = e.topk(min(10, e.shape[1]), -1).indices
    self_rank = float(np.mean([live[r] in set(top10[r].tolist()) for r in range(len(live))])) if live else 0.0
    med = float(np.median(overlaps)) if overlaps else float("nan")
    b.finish("stability", {"median_top10_overlap": med, "self_in_top10": self_rank},
             {"stability_median_top10_overlap": json.dumps(med), "stability_features": str(len(ids)),
              "stability_overlaps": json.dumps(overlaps), "self_in_top10_share": json.dumps(self_rank)})


@stage("ship", needs=("sae_eval", "neighbors", "approximator", "maps", "stability"))
def ship(b: Builder) -> None:
    if not b.cfg.ship_to:
        b.finish("ship", {"shipped": False})
        return
    target = resolve_path(b.cfg.ship_to)
    ship_pack(b.con, b.dir, target)
    b.finish("ship", {"to": str(target)})


def ship_pack(con: Any, workdir: Path, target: Path) -> None:
    """Copy the finished tables into a fresh, compact ``pack.duckdb`` next to the SAE and the
    approximator; the old pack is replaced only once the new one is complete."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(workdir / "sae", tmp / "sae")
    (tmp / "sae" / "COMPLETE").unlink(missing_ok=True)
    for name in ("approximator.safetensors", "baseline.npy"):
        if (workdir / name).exists():
            shutil.copy2(workdir / name, tmp / name)
    tables.copy_into_pack(con, tmp / "pack.duckdb")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
