"""Feature-card lookup latency on a synthetic pack the size of a real one (16,384 features,
d_model 576): the p95 over random features of each library call behind the card's four lists,
and the time to lay out the decoder map with UMAP. Then the same four lists on a Gemma-Scope-sized
pack (65,536 features × 64 effects, each with its SE, specific effect and hub flags, as the
current build writes them): ``p95_ms_effects_65k``, ``p95_ms_actions_65k``, ``p95_ms_cosine_65k``,
``p95_ms_effect_similar_65k`` (target: 10 ms each).

    python -m bench.lookup [--features 16384] [--samples 200] [--shuffle] [--no-umap] [--no-65k]

The pack is written with the same schema as a real one (``steering_core.pack.tables.ensure_schema``)
into a temporary folder and deleted afterwards. ``--shuffle`` stores rows in random order instead
of source order (a worst case for DuckDB's min/max pruning, which indexes must cover).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import emit, log
from steering_core.pack.tables import ensure_schema, set_meta
from steering_core.storage.db import connect, transaction

WORDS = ("wedding", "bride", "ceremony", "python", "weather", "rain", "code", "loop", "news", "sport", "music",
         "guitar", "law", "court", "food", "oven", "space", "rocket", "money", "bank", "poem", "verse", "war",
         "peace", "family", "parents", "medicine", "doctor", "school", "exam", "city", "train")


def _insert(con, table: str, df) -> None:
    con.register("_bulk", df)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(df.columns)}) SELECT {', '.join(df.columns)} FROM _bulk")
    finally:
        con.unregister("_bulk")


def _top_lists(rng, n: int, k: int, order: str) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct random other features per row and values ranked as a pack ranks them."""
    other = np.empty((n, k), np.int64)
    for i in range(n):
        cand = rng.choice(n - 1, size=k, replace=False)
        other[i] = cand + (cand >= i)  # never the feature itself
    vals = rng.standard_normal((n, k)) * 0.05
    key = -np.abs(vals) if order == "abs" else -vals
    idx = np.argsort(key, axis=1, kind="stable")
    return other, np.take_along_axis(vals, idx, 1)


def build_synthetic_pack(folder: Path, n: int = 16_384, d_model: int = 576, n_effects: int = 64, n_neighbors: int = 32,
                         embeddings: bool = True, shuffle: bool = False, seed: int = 0, with_se: bool = False
                         ) -> np.ndarray:
    """Write ``folder/pack.duckdb`` (+ ``sae/`` decoder weights and an approximator) and return
    the unit decoder directions ``[n, d_model]``. ``with_se``: effects with SEs and specific
    effects, a generic response with hubs, and actions with SEs (what a current build writes)."""
    import pandas as pd
    import torch
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w = rng.standard_normal((n, d_model)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    (folder / "sae").mkdir(exist_ok=True)
    save_file({"W_dec": w, "W_enc": np.ascontiguousarray(w.T), "b_enc": np.zeros(n, np.float32),
               "b_dec": np.zeros(d_model, np.float32)}, str(folder / "sae" / "sae_weights.safetensors"))
    from steering_core.measure.approximator import Approximator

    Approximator(torch.from_numpy(rng.standard_normal((d_model, n)).astype(np.float32) * 0.01),
                 torch.zeros(n), 0.5, 1.0, n).save(folder / "approximator.safetensors")
    baseline = rng.exponential(0.05, n).astype(np.float32)
    np.save(folder / "baseline.npy", baseline)

    labels = [" ".join(rng.choice(WORDS, size=3)) for _ in range(n)]
    density = rng.beta(0.6, 8.0, n)
    feats = pd.DataFrame({
        "feature_id": np.arange(n, dtype=np.int32), "label": labels, "auto_label": labels, "notes": "",
        "density": density, "mean_act": rng.exponential(1.0, n), "max_act": rng.exponential(5.0, n), "live": True,
        "baseline_act": baseline.astype(np.float64), "alpha": rng.uniform(2, 20, n), "alpha_dce": 0.5,
        "measured": True, "dec_x": rng.standard_normal(n), "dec_y": rng.standard_normal(n),
        "eff_x": rng.standard_normal(n), "eff_y": rng.standard_normal(n), "cluster": rng.integers(0, 24, n),
    })
    tgt, eff = _top_lists(rng, n, n_effects, "abs")
    src = np.repeat(np.arange(n), n_effects)
    effects = pd.DataFrame({
        "source_feature": src.astype(np.int32), "target_feature": tgt.ravel().astype(np.int32),
        "effect": eff.ravel(), "rel_effect": eff.ravel() / (baseline[tgt.ravel()] + 1e-2),
        "rank": np.tile(np.arange(n_effects), n).astype(np.int32),
    })
    generic = None
    if with_se:
        g = rng.standard_normal(n) * 0.005
        hub = rng.random(n) < 0.01
        generic = pd.DataFrame({"target_feature": np.arange(n, dtype=np.int32), "generic": g,
                                "generic_se": np.abs(rng.standard_normal(n)) * 0.002,
                                "hub_share": np.where(hub, 0.2, 0.0), "hub": hub})
        spec = effects["effect"].to_numpy() - g[effects["target_feature"].to_numpy()]
        order = np.argsort(-np.abs(spec.reshape(n, n_effects)), axis=1, kind="stable")
        rank_spec = np.empty_like(order)
        np.put_along_axis(rank_spec, order, np.arange(n_effects)[None], axis=1)
        effects["effect_se"] = np.abs(rng.standard_normal(len(effects))) * 0.01
        effects["specific"] = spec
        effects["specific_se"] = effects["effect_se"] * 1.1
        effects["rank_specific"] = rank_spec.ravel().astype(np.int32)
    neigh = []
    for kind in ("cosine", "effect_similar", "action"):
        other, val = _top_lists(rng, n, n_neighbors, "desc")
        if kind == "action":  # actions are the sources that raise the feature: positive values only
            val = -np.sort(-np.abs(val), axis=1)
        frame = pd.DataFrame({
            "kind": kind, "feature_id": np.repeat(np.arange(n), n_neighbors).astype(np.int32),
            "other_id": other.ravel().astype(np.int32), "value": val.ravel(),
            "rank": np.tile(np.arange(n_neighbors), n).astype(np.int32)})
        if with_se and kind == "action":
            frame["se"] = np.abs(rng.standard_normal(len(frame))) * 0.01
        neigh.append(frame)
    neighbors = pd.concat(neigh, ignore_index=True)
    if shuffle:
        effects = effects.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        neighbors = neighbors.sample(frac=1.0, random_state=seed).reset_index(drop=True)

    con = connect(folder / "pack.duckdb")
    try:
        ensure_schema(con)
        with transaction(con):
            set_meta(con, {"model_id": "synthetic", "hook_point": "blocks.15.hook_resid_post", "layer": "15",
                           "d_model": str(d_model), "d_sae": str(n), "build_date": "2000-01-01T00:00:00+00:00"})
            _insert(con, "features", feats)
            _insert(con, "feature_effects", effects)
            _insert(con, "feature_neighbors", neighbors)
            if generic is not None:
                _insert(con, "generic_response", generic)
            if embeddings:
                e = rng.standard_normal((n, 384)).astype(np.float32)
                e /= np.linalg.norm(e, axis=1, keepdims=True)
                _insert(con, "label_embeddings", pd.DataFrame({"feature_id": np.arange(n, dtype=np.int32),
                                                               "embedding": list(e)}))
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return w


def p95_ms(fn, ids) -> tuple[float, float]:
    times = []
    for f in ids:
        t0 = time.perf_counter()
        fn(f)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 95)), float(np.percentile(times, 50))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=16_384)
    ap.add_argument("--d-model", type=int, default=576)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--shuffle", action="store_true", help="store rows in random order (worst case for pruning)")
    ap.add_argument("--no-umap", action="store_true", help="skip the UMAP timing")
    ap.add_argument("--keep", help="build the pack in this folder and keep it")
    ap.add_argument("--no-65k", action="store_true", help="skip the 65,536-feature case")
    args = ap.parse_args()

    from steering_core import browse
    from steering_core.pack.reader import FeaturePack

    with tempfile.TemporaryDirectory(prefix="bench_lookup_") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "pack"
        t0 = time.perf_counter()
        w = build_synthetic_pack(folder, args.features, args.d_model, shuffle=args.shuffle)
        log(f"synthetic pack: {args.features} features written in {time.perf_counter() - t0:.1f} s "
            f"({(folder / 'pack.duckdb').stat().st_size / 1e6:.0f} MB)")
        pack = FeaturePack(folder)
        rng = np.random.default_rng(1)
        ids = rng.choice(args.features, size=args.samples, replace=False).tolist()
        calls = {name: kind.fetch for name, kind in browse.LIST_KINDS.items()}
        for fn in calls.values():  # warm: the per-pack feature table is loaded on first use
            fn(pack, ids[0])
        for name, fn in calls.items():
            p95, p50 = p95_ms(lambda f, fn=fn: fn(pack, f), ids)
            emit(f"p95_ms_{name}", p95, "ms", p50_ms=round(p50, 3), samples=len(ids), features=args.features,
                 shuffled=args.shuffle)
        filt = browse.ListFilter(min_abs=0.02, max_density=0.2, sign="positive")
        p95, p50 = p95_ms(lambda f: browse.effects_list(pack, f, filt), ids)
        emit("p95_ms_effects_filtered", p95, "ms", p50_ms=round(p50, 3))
        pack.close()
        # the predicted path: a pack copy whose sampled features count as unmeasured
        con = connect(folder / "pack.duckdb")
        with transaction(con):
            con.execute("DELETE FROM feature_effects WHERE source_feature IN (SELECT unnest(?))", [ids])
            con.execute("UPDATE features SET measured = false WHERE feature_id IN (SELECT unnest(?))", [ids])
        con.close()
        pack = FeaturePack(folder)
        browse.effects_list(pack, ids[0])
        p95, p50 = p95_ms(lambda f: browse.effects_list(pack, f), ids)
        emit("p95_ms_effects_predicted", p95, "ms", p50_ms=round(p50, 3))
        pack.close()
        if not args.no_umap:
            from steering_core.pack.maps import umap_2d

            t0 = time.perf_counter()
            umap_2d(w, seed=0)
            emit("umap_build_s", time.perf_counter() - t0, "s", points=int(w.shape[0]), dim=int(w.shape[1]))
        if not args.no_65k:
            scale_case(Path(tmp) / "pack65k", args.samples, args.shuffle)


def scale_case(folder: Path, samples: int, shuffle: bool = False, n: int = 65_536) -> None:
    """The four card lists on a 65,536-feature pack with SEs (Gemma Scope 65k at 64 effects each)."""
    from steering_core import browse
    from steering_core.pack.reader import FeaturePack

    t0 = time.perf_counter()
    build_synthetic_pack(folder, n, d_model=64, embeddings=False, shuffle=shuffle, with_se=True, seed=2)
    log(f"synthetic pack: {n} features × 64 effects with SEs written in {time.perf_counter() - t0:.1f} s "
        f"({(folder / 'pack.duckdb').stat().st_size / 1e6:.0f} MB)")
    pack = FeaturePack(folder)
    try:
        ids = np.random.default_rng(3).choice(n, size=samples, replace=False).tolist()
        for name in ("effects", "actions", "cosine", "effect_similar"):
            fetch = browse.LIST_KINDS[name].fetch
            fetch(pack, ids[0])  # warm: per-pack tables are loaded on first use
            p95, p50 = p95_ms(lambda f, fetch=fetch: fetch(pack, f), ids)
            emit(f"p95_ms_{name}_65k", p95, "ms", p50_ms=round(p50, 3), samples=len(ids), features=n,
                 effects_per_feature=64, with_se=True, shuffled=shuffle)
    finally:
        pack.close()


if __name__ == "__main__":
    main()
