"""Read a built feature pack (``pack.duckdb`` + ``sae/`` + ``approximator.safetensors``): the
library calls behind the app's feature views. Read-only; lookups are indexed queries so a card
renders instantly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SteeringCoreError
from .models import cache_dir
from .store import StoreError, connect


def default_pack_dir() -> Path:
    """Where the app looks for a pack: ``$STEERING_CACHE_DIR/pack`` (default: the shipped one)."""
    return cache_dir() / "pack"


class FeatureLookupError(SteeringCoreError):
    """An unknown feature id, or a pack that lacks what was asked for."""


@dataclass
class Effect:
    feature_id: int
    value: float
    rel_value: float | None
    label: str


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

    def close(self) -> None:
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
        """The numbers a person wants before trusting a pack."""
        m = self.meta_json
        return {
            "model": self.meta.get("model_id"), "hook": self.meta.get("hook_point"), "d_sae": m("d_sae"),
            "live_features": int(self.con.execute("SELECT count(*) FROM features WHERE live").fetchone()[0]),
            "measured_features": int(self.con.execute("SELECT count(*) FROM features WHERE measured").fetchone()[0]),
            "explained_variance": m("sae_explained_variance"), "delta_ce": m("sae_delta_ce"), "mean_l0": m("sae_mean_l0"),
            "dead_fraction": m("dead_fraction_corpus"), "approximator_r2": m("approximator_r2_heldout"),
            "stability_top10_overlap": m("stability_median_top10_overlap"), "self_in_top10": m("self_in_top10_share"),
            "corpus_tokens": m("corpus_tokens"), "built": self.meta.get("build_date"),
        }

    def check_feature(self, feature_id) -> int:
        try:
            fid = int(str(feature_id).strip())
        except (TypeError, ValueError):
            raise FeatureLookupError(f"Feature ids are whole numbers from 0 to {self.n_features - 1}; got {feature_id!r}.")
        if not 0 <= fid < self.n_features:
            raise FeatureLookupError(f"Feature {fid} does not exist: this pack has features 0 to {self.n_features - 1}.")
        return fid

    def feature(self, feature_id) -> dict:
        fid = self.check_feature(feature_id)
        cur = self.con.execute("SELECT * FROM features WHERE feature_id = ?", [fid])
        cols = [d[0] for d in cur.description]
        return dict(zip(cols, cur.fetchone()))

    def _labels(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = self.con.execute("SELECT feature_id, label FROM features WHERE feature_id IN (SELECT unnest(?))", [ids])
        return dict(rows.fetchall())

    def effects(self, feature_id, k: int = 64) -> list[Effect]:
        """Measured effects of steering with this feature, largest |effect| first."""
        fid = self.check_feature(feature_id)
        rows = self.con.execute("SELECT target_feature, effect, rel_effect FROM feature_effects WHERE source_feature = ? "
                                "ORDER BY rank LIMIT ?", [fid, k]).fetchall()
        labels = self._labels([r[0] for r in rows])
        return [Effect(int(t), float(e), None if r is None else float(r), labels.get(int(t), "")) for t, e, r in rows]

    def neighbors(self, kind: str, feature_id, k: int = 32) -> list[Effect]:
        """``action`` (sources that raise this feature most), ``cosine`` or ``effect_similar``."""
        fid = self.check_feature(feature_id)
        rows = self.con.execute("SELECT other_id, value FROM feature_neighbors WHERE kind = ? AND feature_id = ? "
                                "ORDER BY rank LIMIT ?", [kind, fid, k]).fetchall()
        labels = self._labels([r[0] for r in rows])
        return [Effect(int(o), float(v), None, labels.get(int(o), "")) for o, v in rows]

    def snippets(self, feature_id) -> list[dict]:
        fid = self.check_feature(feature_id)
        cur = self.con.execute("SELECT kind, rank, max_act, tokens, acts FROM feature_snippets WHERE feature_id = ? "
                               "ORDER BY kind = 'top' DESC, kind, rank", [fid])
        return [dict(zip(["kind", "rank", "max_act", "tokens", "acts"], r)) for r in cur.fetchall()]

    def baseline(self) -> np.ndarray | None:
        p = self.dir / "baseline.npy"
        return np.load(p) if p.exists() else None


def open_default_pack() -> FeaturePack | None:
    """The shipped (or configured) pack, or None when none has been built."""
    d = default_pack_dir()
    if not (d / "pack.duckdb").exists():
        return None
    return FeaturePack(d)
