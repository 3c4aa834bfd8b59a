"""Read a built feature pack (``pack.duckdb`` + ``sae/`` + ``approximator.safetensors``): the
library calls behind the app's feature views. Read-only; a card renders instantly at any SAE width
(65,536 features × 64 effects: ``python -m bench.lookup``).

How lookups stay fast: a pack's rows are stored in source order (the build commits them chunk by
chunk, in order), so DuckDB's per-row-group min/max statistics prune a lookup of one feature's
effects or neighbours to a single row group, and a lookup is one such point query. The per-target
columns a list shows beside each row (label, automatic label, density, hub flag) come from small
per-pack tables read once, rather than from a join per lookup (a join builds a hash table over the
whole features table every time: most of a lookup's cost at 65k features)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steering_core.describe.inputs import collapse_same_text
from steering_core.errors import FeatureLookupError
from steering_core.model.loading import cache_dir
from steering_core.pack import decoder
from steering_core.storage.db import StoreError, connect


def default_pack_dir() -> Path:
    """Where the app looks for a pack: ``$STEERING_CACHE_DIR/pack`` (default: the shipped one)."""
    return cache_dir() / "pack"


#: A target the features table lacks (a LEFT JOIN's NULLs): label, auto label, density.
_NO_TARGET = (None, None, None)


@dataclass
class Effect:
    feature_id: int
    value: float
    rel_value: float | None
    label: str
    se: float | None = None  # one standard error of ``value`` (effects; None for neighbours, old packs)


class FeaturePack:
    """A read-only view of one pack."""

    def __init__(self, path: str | Path):
        path = Path(path)
        db = path / "pack.duckdb" if path.is_dir() else path
        self.dir = db.parent
        self.con = connect(db, read_only=True)
        names = {r[0] for r in self.con.execute("SHOW TABLES").fetchall()}
        missing = {"meta", "features", "feature_effects"} - names
        if missing:
            raise StoreError(f"{db} is not a feature pack (missing tables {sorted(missing)}).")
        self.meta = dict(self.con.execute("SELECT key, value FROM meta").fetchall())
        self.n_features = int(self.con.execute("SELECT count(*) FROM features").fetchone()[0])
        self._cache: dict[str, object] = {}
        self._cache_lock = threading.RLock()
        self._idle: list = []  # cursors no read holds now
        self._n_cursors = 0
        self._pool_lock = threading.Lock()  # not the cache's: a long load must not hold up reads

    def close(self) -> None:
        with self._pool_lock:
            for cur in self._idle:
                cur.close()
            self._idle.clear()
            self.con.close()

    @property
    def sae_dir(self) -> Path:
        return self.dir / "sae"

    def meta_json(self, key: str, default=None):
        try:
            return json.loads(self.meta[key])
        except (KeyError, ValueError):
            return self.meta.get(key, default)

    def summary(self) -> dict:
        """The numbers a person wants before trusting a pack (:func:`~steering_core.pack.reliability.pack_summary`)."""
        from steering_core.pack.reliability import pack_summary

        return pack_summary(self)

    def check_feature(self, feature_id) -> int:
        if self.n_features == 0:
            raise FeatureLookupError("This pack has no features (an empty or unfinished build); rebuild it.")
        if feature_id is None or not str(feature_id).strip():
            raise FeatureLookupError(f"Enter a feature id, a whole number from 0 to {self.n_features - 1}.")
        try:
            fid = int(str(feature_id).strip())
        except (TypeError, ValueError):
            raise FeatureLookupError(f"Feature ids are whole numbers from 0 to {self.n_features - 1}; got {feature_id!r}.")
        if not 0 <= fid < self.n_features:
            raise FeatureLookupError(f"Feature {fid} does not exist: this pack has features 0 to {self.n_features - 1}.")
        return fid

    def feature(self, feature_id) -> dict:
        fid = self.check_feature(feature_id)
        return self._read("SELECT * FROM features WHERE feature_id = ?", [fid], how="record")

    def _labels(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        return dict(self._read("SELECT feature_id, label FROM features WHERE feature_id IN (SELECT unnest(?))", [ids]))

    def effects(self, feature_id, k: int = 64) -> list[Effect]:
        """Measured effects of steering with this feature, largest |effect| first."""
        fid = self.check_feature(feature_id)
        se = "effect_se" if self.has_column("feature_effects", "effect_se") else "NULL"
        rows = self._read(f"SELECT target_feature, effect, rel_effect, {se} FROM feature_effects "
                          "WHERE source_feature = ? AND rank IS NOT NULL ORDER BY rank LIMIT ?", [fid, k])
        labels = self._labels([r[0] for r in rows])
        return [Effect(int(t), float(e), None if r is None else float(r), labels.get(int(t), ""),
                       None if s is None else float(s)) for t, e, r, s in rows]

    def neighbors(self, kind: str, feature_id, k: int = 32) -> list[Effect]:
        """``action`` (sources that raise this feature most), ``cosine`` or ``effect_similar``."""
        fid = self.check_feature(feature_id)
        rows = self._read("SELECT other_id, value FROM feature_neighbors WHERE kind = ? AND feature_id = ? "
                          "ORDER BY rank LIMIT ?", [kind, fid, k])
        labels = self._labels([r[0] for r in rows])
        return [Effect(int(o), float(v), None, labels.get(int(o), "")) for o, v in rows]

    def snippets(self, feature_id) -> list[dict]:
        """Top snippets then quantile samples; ``similar`` counts the near-duplicates each top
        snippet stands for (1 in packs built before snippets were collapsed)."""
        fid = self.check_feature(feature_id)
        sim = "n_similar" if self.has_column("feature_snippets", "n_similar") else "1"
        rows = self._read(f"SELECT kind, rank, max_act, tokens, acts, coalesce({sim}, 1) FROM feature_snippets "
                          "WHERE feature_id = ? ORDER BY kind = 'top' DESC, kind, rank", [fid])
        return collapse_same_text([dict(zip(["kind", "rank", "max_act", "tokens", "acts", "similar"], r))
                                   for r in rows])

    def steers_well_bar(self) -> float | None:
        """The output score a feature must exceed to "steer well": the 95th percentile of the
        scores of random directions at their own α (None for packs without output scores)."""
        v = self.meta_json("output_score_steers_well")
        return float(v) if isinstance(v, (int, float)) else None

    def _alpha_spec(self) -> dict | None:
        spec = self.meta_json("alpha_spec")  # how the build loss-matched α (absent in old packs)
        return spec if isinstance(spec, dict) else None

    def alpha_basis(self) -> str:
        """What each feature's α was loss-matched on, in words. ΔCE depends on the text it is
        measured on, so an α matched on other text (the Steer page's Automatic α reads built-in
        neutral prose) can differ by tens of percent; the card says which text this one used."""
        spec = self._alpha_spec()
        if spec is None:
            return "the pack's held-out text"
        n, t = int(spec.get("ref_windows", 0)), int(spec.get("ref_tokens", 0))
        return f"{n} held-out window{'s' if n != 1 else ''} × {t} tokens of the pack's corpus"

    def alpha_missed(self, feature) -> tuple[float, float] | None:
        """(checked ΔCE, target) when this feature's α missed the loss target by more than the
        pack's tolerance, else None. The solve assumes ΔCE grows about quadratically in α; where
        it jumps instead, the checked ΔCE lands far from the target (up to 7.6 nats against 0.5 for
        about 4 % of the embedded pack's features), and the effects were measured at that push.
        ``feature``: an id, or a row from :meth:`feature`."""
        row = feature if isinstance(feature, dict) else self.feature(feature)
        dce = row.get("alpha_dce")
        spec = self._alpha_spec()
        if dce is None or spec is None:
            return None
        target, tol = float(spec.get("target_dce", 0.5)), float(spec.get("tolerance", 0.2))
        return (float(dce), target) if abs(float(dce) - target) > tol * target else None

    def effects_budget(self, feature_id) -> tuple[int, bool] | None:
        """How many steered rollouts this feature's effects average, and whether that is the
        top-up's larger budget (its top 10 was contested at the pack's own); None where the pack
        does not say."""
        fid = self.check_feature(feature_id)
        base = self.meta_json("effects_steered_rollouts")
        if not isinstance(base, int):
            return None
        more = self.meta_json("effects_topup_rollouts")
        topped = self.cached("topped_up", lambda: frozenset(self.meta_json("effects_topped_up", []) or []))
        return (more, True) if isinstance(more, int) and fid in topped else (base, False)

    def baseline(self) -> np.ndarray | None:
        p = self.dir / "baseline.npy"
        return np.load(p) if p.exists() else None

    def baseline_rows(self) -> tuple[np.ndarray, int] | None:
        """The unsteered rows the baseline averages, ``[P × rollouts, d_sae]`` prompt-major (each
        row one rollout's mean activation over its generated tokens), and P, the number of effect
        prompts; None where the pack lacks them (older packs)."""
        p = self.dir / "baseline_rows.npy"
        spec = self.meta_json("effects_rollouts")
        prompts = spec.get("prompts") if isinstance(spec, dict) else None
        if not p.exists() or not isinstance(prompts, list) or not prompts:
            return None
        return np.load(p, mmap_mode="r"), len(prompts)

    # -- reads behind the feature browser (steering_core.browse) --------------------------------------
    # A pack is opened once per app process and shared by every browser session and rerun, each on
    # its own Streamlit thread. One DuckDB connection refuses a second query while one runs
    # ("connection is busy"), so every read after opening borrows a cursor (a connection of its own
    # to the same database) for just that query. Idle cursors are kept for the next read: there are
    # never more than reads that ran at once, however many threads a long session starts.

    def _read(self, sql: str, params: list | None = None, how: str = "all"):
        """One query on a borrowed cursor: ``how`` is ``all`` (rows), ``one`` (a row or None),
        ``record`` (a row as a column → value dict, or None) or ``numpy`` (columns as arrays)."""
        with self._pool_lock:
            if self._idle:
                cur = self._idle.pop()
            else:
                cur = self.con.cursor()
                self._n_cursors += 1
        try:
            res = cur.execute(sql, params or [])
            if how == "one":
                return res.fetchone()
            if how == "record":
                row = res.fetchone()
                return None if row is None else dict(zip([d[0] for d in res.description], row))
            return res.fetchnumpy() if how == "numpy" else res.fetchall()
        finally:
            with self._pool_lock:
                self._idle.append(cur)

    def open_cursors(self) -> int:
        """How many cursors this pack has opened (bounded by the reads that ever ran at once)."""
        return self._n_cursors

    def cached(self, key: str, load):
        """``load()`` once per pack and key (a pack never changes while open, so this is safe)."""
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = load()
            return self._cache[key]

    @property
    def pack_id(self) -> str:
        """A stable name for this build of the pack (user notes are keyed by it): model, hook,
        SAE width and build date, or the pack's folder when the meta table lacks any of them."""
        parts = [self.meta.get(k) for k in ("model_id", "hook_point", "d_sae", "build_date")]
        if all(parts):
            return "|".join(str(p) for p in parts)
        return f"path:{self.dir.resolve()}"

    def has_column(self, table: str, column: str) -> bool:
        return self.cached(f"column:{table}.{column}", lambda: bool(self._read(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
            [table, column], how="one")[0]))

    @property
    def has_specific(self) -> bool:
        """Whether this pack measured the generic response (and so stores specific effects)."""
        return self.has_column("feature_effects", "specific") and self.has_table("generic_response")

    def effect_rows(self, feature_id, basis: str = "raw") -> list[tuple]:
        """Every stored effect of this source, rank order: ``(target, value, rel_effect, label,
        auto_label, density, se, hub)``, where ``value`` is the raw or the specific effect. All of
        them (a pack stores its top-k only), so callers can filter without losing rows that a filter
        would allow. Packs built before standard errors were stored give NULL SEs and no hubs."""
        fid = self.check_feature(feature_id)
        info = self._target_info()
        if not self.has_specific:
            if basis == "specific":
                return []
            rows = self._read("SELECT target_feature, effect, rel_effect FROM feature_effects "
                              "WHERE source_feature = ? ORDER BY rank", [fid])
            return [(t, e, r, *info.get(t, _NO_TARGET), None, False) for t, e, r in rows]
        value, se, rank = (("effect", "effect_se", "rank") if basis == "raw"
                           else ("specific", "specific_se", "rank_specific"))
        rows = self._read(f"SELECT target_feature, {value}, rel_effect, {se} FROM feature_effects "
                          f"WHERE source_feature = ? AND {rank} IS NOT NULL ORDER BY {rank}", [fid])
        hubs = self._hubs()
        return [(t, v, r, *info.get(t, _NO_TARGET), s, hubs.get(t, False)) for t, v, r, s in rows]

    def neighbor_rows(self, kind: str, feature_id) -> list[tuple]:
        """Every stored neighbour of one kind, rank order: ``(other, value, label, auto_label, density,
        se)`` (``se`` NULL where the pack stores none)."""
        fid = self.check_feature(feature_id)
        se = "se" if self.has_column("feature_neighbors", "se") else "NULL"
        rows = self._read(f"SELECT other_id, value, {se} FROM feature_neighbors "
                          "WHERE kind = ? AND feature_id = ? ORDER BY rank", [kind, fid])
        info = self._target_info()
        return [(o, v, *info.get(o, _NO_TARGET), s) for o, v, s in rows]

    def _target_info(self) -> dict[int, tuple]:
        """``feature_id → (label, auto_label, density)`` of every feature (read once): what a list
        shows beside each row, as the LEFT JOIN on ``features`` used to give it."""
        def load():
            rows = self._read("SELECT feature_id, label, auto_label, density FROM features")
            return {f: (lab, auto, d) for f, lab, auto, d in rows}
        return self.cached("reader:target_info", load)

    def _hubs(self) -> dict[int, bool]:
        """``target → hub`` from ``generic_response`` (read once; absent or NULL means not a hub)."""
        def load():
            rows = self._read("SELECT target_feature, hub FROM generic_response")
            return {t: bool(h) for t, h in rows if h is not None}
        return self.cached("reader:hubs", load)

    def outputs(self, feature_id) -> dict | None:
        """The feature's exact next-token description, or None (packs built before it): ``gains`` and
        ``losses`` (token strings with probability changes) and ``output_score``."""
        fid = self.check_feature(feature_id)
        if not self.has_table("feature_outputs"):
            return None
        row = self._read("SELECT gains, gain_values, losses, loss_values, output_score FROM "
                         "feature_outputs WHERE feature_id = ?", [fid], how="one")
        if row is None:
            return None
        return {"gains": list(zip(row[0], row[1])), "losses": list(zip(row[2], row[3])), "output_score": row[4]}

    def generic_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(generic response, its SE, hub flags)`` over all targets (loaded once), or None."""
        if not self.has_table("generic_response"):
            return None

        def load():
            n = self.n_features
            mean, se, hub = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
            for t, g, gse, h in self._read(
                    "SELECT target_feature, generic, generic_se, hub FROM generic_response"):
                if 0 <= t < n:
                    mean[t], se[t], hub[t] = g, gse, bool(h)
            return mean, se, hub
        return self.cached("generic_arrays", load)

    def generic(self, feature_id) -> tuple[float, float, float, bool] | None:
        """``(generic response, its SE, hub share, hub)`` of a target, or None for older packs."""
        fid = self.check_feature(feature_id)
        if not self.has_table("generic_response"):
            return None
        row = self._read("SELECT generic, generic_se, hub_share, hub FROM generic_response "
                         "WHERE target_feature = ?", [fid], how="one")
        return None if row is None else (float(row[0]), float(row[1]), float(row[2]), bool(row[3]))

    def has_table(self, name: str) -> bool:
        return self.cached(f"table:{name}", lambda: bool(self._read(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name], how="one")[0]))

    def feature_columns(self, columns: list[str], ids: list[int] | None = None) -> list[tuple]:
        """Selected columns of the features table (all features, or the given ids), id order."""
        allowed = {"feature_id", "label", "auto_label", "notes", "density", "mean_act", "max_act", "live",
                   "baseline_act", "alpha", "alpha_dce", "measured", "dec_x", "dec_y", "eff_x", "eff_y", "cluster"}
        later = {"description", "output_score", "token_change", "context_words"}  # NULL in older packs
        bad = [c for c in columns if c not in allowed | later]
        if bad:
            raise FeatureLookupError(f"Unknown feature column(s) {bad}.")
        cols = [c if c in allowed or self.has_column("features", c) else f"NULL AS {c}" for c in columns]
        sql = f"SELECT {', '.join(cols)} FROM features"
        if ids is None:
            return self._read(sql + " ORDER BY feature_id")
        return self._read(sql + " WHERE feature_id IN (SELECT unnest(?)) ORDER BY feature_id",
                          [[int(i) for i in ids]])

    def label_matches(self, text: str) -> list[tuple]:
        """Features whose label or auto label contains ``text`` (case-insensitive), id order:
        ``(feature_id, label, auto_label, density)``. A plain substring test, so the user's
        ``%`` or ``_`` mean themselves."""
        q = str(text).lower()
        return self._read(
            "SELECT feature_id, label, auto_label, density FROM features "
            "WHERE contains(lower(coalesce(label, '')), ?) OR contains(lower(coalesce(auto_label, '')), ?) "
            "ORDER BY feature_id", [q, q])

    def is_measured(self, feature_id) -> bool:
        """Whether this feature's effects were measured (its ``measured`` flag or any stored row)."""
        fid = self.check_feature(feature_id)
        row = self._read(
            "SELECT coalesce(measured, false) OR EXISTS (SELECT 1 FROM feature_effects WHERE source_feature = ?) "
            "FROM features WHERE feature_id = ?", [fid, fid], how="one")
        return bool(row and row[0])

    def decoder_row(self, feature_id) -> np.ndarray:
        """The raw decoder row of a feature (one row read from the SAE weights, no sae_lens needed)."""
        return decoder.row(self.sae_dir, self.check_feature(feature_id))

    def decoder_matrix(self) -> np.ndarray:
        """All decoder rows ``[d_sae, d_model]``, unit-normalised (loaded once per pack)."""
        return self.cached("decoder_matrix", lambda: decoder.unit_matrix(self.sae_dir))

    def approximator(self):
        """The pack's effect approximator (loaded once), or None when the pack has none."""
        def load():
            from steering_core.measure.approximator import Approximator

            path = self.dir / "approximator.safetensors"
            return Approximator.load(path) if path.is_file() else None
        return self.cached("approximator", load)

    def cached_baseline(self) -> np.ndarray | None:
        """:meth:`baseline`, read once."""
        return self.cached("baseline", self.baseline)

    def label_embedding_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``(feature_ids, unit embeddings [n, dim])`` of the pack labels (loaded once)."""
        def load():
            if not self.has_table("label_embeddings"):
                return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
            got = self._read("SELECT feature_id, embedding FROM label_embeddings "
                             "WHERE embedding IS NOT NULL ORDER BY feature_id", how="numpy")
            if len(got["feature_id"]) == 0:
                return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
            ids = np.asarray(got["feature_id"], np.int64)
            emb = np.stack([np.asarray(e, np.float32) for e in got["embedding"]])
            return ids, emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return self.cached("label_embeddings", load)


def open_default_pack() -> FeaturePack | None:
    """The shipped (or configured) pack, or None when none has been built."""
    d = default_pack_dir()
    if not (d / "pack.duckdb").exists():
        return None
    return FeaturePack(d)
