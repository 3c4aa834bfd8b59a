"""Build a feature pack: corpus → activations → SAE → feature statistics → effects →
approximator → maps → ship. One command, resumable after ``kill -9`` at any point:

    python -m steering_core.pack build packs/embedded.toml      # run or resume
    python -m steering_core.pack status packs/embedded.toml     # what is done, last log lines

Each stage records completion in the build database (``stages`` table) only after its outputs are
durable (atomic file renames, DuckDB transactions); the effects stage commits per chunk of
features together with that chunk's rows, so a resumed build continues at the first missing
chunk and ends with the same tables as an uninterrupted one."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from steering_core.errors import SteeringCoreError
from steering_core.measure.effects import (
    EffectSpec,
    measure_baseline,
    relative_effect,
    steered_feature_means,
    top_effects,
)
from steering_core.model.loading import PROJECT_ROOT, hook_name, layer_of_hook, load_model
from steering_core.pack.corpus import Corpus, CorpusSpec, build_corpus
from steering_core.pack.sae_training import SAETrainSpec
from steering_core.pack.stats import StatsSpec
from steering_core.progress import Progress
from steering_core.storage.db import (
    StoreError,
    connect,
    ensure_schema,
    mark_stage,
    set_meta,
    stage_done,
    transaction,
)

STAGES = ["corpus", "activations", "sae", "sae_eval", "stats", "effects", "neighbors", "approximator",
          "maps", "stability", "ship"]


class PackConfigError(SteeringCoreError):
    """A pack configuration that cannot be built as written."""


@dataclass
class AlphaSpec:
    target_dce: float = 0.5
    ref_windows: int = 2
    ref_tokens: int = 32
    tolerance: float = 0.2
    symmetric: bool = False  # one-sided probe: 2 evaluations per feature unless the check fails


@dataclass
class PackConfig:
    name: str
    model: str = "embedded"
    layer: int | None = None
    hook: str | None = None
    sae: str = "train"  # "train", or an SAE spec (folder, release:id) to measure instead
    seed: int = 0
    out_dir: str | None = None
    ship_to: str | None = None
    top_effects: int = 64
    neighbors: int = 32
    stability_features: int = 50
    dense_threshold: float = 0.2
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    sae_train: SAETrainSpec = field(default_factory=SAETrainSpec)
    stats: StatsSpec = field(default_factory=StatsSpec)
    effects: EffectSpec = field(default_factory=EffectSpec)
    alpha: AlphaSpec = field(default_factory=AlphaSpec)

    @property
    def workdir(self) -> Path:
        return _resolve(self.out_dir) if self.out_dir else PROJECT_ROOT / "cache" / "build" / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _resolve(p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def _from_dict(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise PackConfigError(f"[{where}] must be a table of settings.")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise PackConfigError(f"Unknown setting(s) {unknown} in [{where}]; known: {sorted(names)}.")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k)
        if dataclasses.is_dataclass(default):
            kwargs[k] = _from_dict(type(default), v, k)
        elif isinstance(default, tuple) and isinstance(v, list):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def load_config(path: str | Path) -> PackConfig:
    """Read a TOML pack config; unknown keys and impossible values are errors, not silent defaults."""
    path = Path(path)
    if not path.exists():
        raise PackConfigError(f"No pack config at {path}.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PackConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:  # a folder, or no permission to read it
        raise PackConfigError(f"Cannot read the pack config {path} ({exc.strerror or exc}).") from None
    if "name" not in data:
        data["name"] = path.stem
    nested = {k: data.pop(k) for k in ("corpus", "sae_train", "stats", "effects", "alpha") if k in data}
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(PackConfig)})
    if unknown:
        raise PackConfigError(f"Unknown setting(s) {unknown} in {path.name}.")
    cfg = PackConfig(**data)
    for k, v in nested.items():
        setattr(cfg, k, _from_dict(type(getattr(cfg, k)), v, k))
    _check_values(cfg)
    return cfg


#: Settings whose default is None but which take a whole number when given.
_OPTIONAL_INTS = {"layer", "dead_feature_window"}


def _check_value(key: str, value, default, name: str = "") -> None:
    """One setting against the type of its default: whole numbers and numbers must be finite and
    not negative, texts must be text, lists hold items like the default's."""
    def fail(why: str) -> None:
        raise PackConfigError(f"{key} {why}, not {value!r}.")

    if default is None:
        default = 0 if name in _OPTIONAL_INTS else ""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            fail("must be a whole number")
        if value < 0:
            fail("cannot be negative")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("must be a number")
        if not math.isfinite(value):
            fail("must be a finite number")
        if value < 0:
            fail("cannot be negative")
    elif isinstance(default, str):
        if not isinstance(value, str):
            fail("must be text")
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            fail("must be a list")
        if default:
            for i, item in enumerate(value):
                _check_value(f"{key}[{i}]", item, default[0])
                if isinstance(item, str) and not item.strip():
                    raise PackConfigError(f"{key}[{i}] is empty; every item must be non-empty text.")


def _check_values(cfg: PackConfig) -> None:
    """Refuse impossible values before anything is written (a NaN or negative setting would
    otherwise surface as a traceback, or as a wrong pack, after minutes of building)."""
    from steering_core.names import InvalidNameError, clean_name

    try:
        clean_name(cfg.name, "pack")  # the name becomes a folder under cache/build
    except InvalidNameError as exc:
        raise PackConfigError(str(exc)) from None
    fresh = PackConfig(name=cfg.name)
    for f in dataclasses.fields(PackConfig):
        value, default = getattr(cfg, f.name), getattr(fresh, f.name)
        items = ([(f"[{f.name}] {g.name}", g.name, getattr(value, g.name), getattr(default, g.name))
                  for g in dataclasses.fields(default)] if dataclasses.is_dataclass(default)
                 else [(f.name, f.name, value, default)])
        for key, name, v, d in items:
            if v is not None:  # None only where the default is None and the setting was left out
                _check_value(key, v, d, name)
    if cfg.hook:
        try:
            layer_of_hook(cfg.hook)  # the form; the range is checked against the model
        except SteeringCoreError as exc:
            raise PackConfigError(str(exc)) from None


def resolve_layer(cfg: PackConfig, model) -> int:
    """The block whose output the pack studies, from ``layer`` or ``hook`` (checked against the model)."""
    if cfg.hook:
        try:
            layer = layer_of_hook(cfg.hook, model.n_layers)
        except SteeringCoreError as exc:
            raise PackConfigError(f"Hook {cfg.hook!r} does not exist on {model.name}: {exc}") from exc
    elif cfg.layer is not None:
        layer = int(cfg.layer)
    else:
        layer = model.default_layer
    if not 0 <= layer < model.n_layers:
        raise PackConfigError(f"Layer {layer} does not exist on {model.name} (layers 0..{model.n_layers - 1}).")
    return layer


# ----------------------------------------------------------------------------------------------


class Builder:
    """Runs the stages of one pack config; safe to construct again after a crash."""

    def __init__(self, cfg: PackConfig, show_bar: bool = True, model=None):
        self.cfg = cfg
        self.show_bar = show_bar
        self.dir = cfg.workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "build.log"
        self.con = connect(self.dir / "build.duckdb")
        ensure_schema(self.con)
        self._model = model
        self._sae = None
        self._corpus = None
        self._acts = None

    # -- shared state ------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.show_bar:
            print(line, file=sys.stderr, flush=True)

    @property
    def model(self):
        if self._model is None:
            self.log(f"loading model {self.cfg.model}")
            self._model = load_model(self.cfg.model)
        return self._model

    @property
    def layer(self) -> int:
        return resolve_layer(self.cfg, self.model)

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = Corpus.load(self.dir / "corpus.npz")
        return self._corpus

    @property
    def acts(self) -> np.ndarray:
        if self._acts is None:
            self._acts = np.load(self.dir / "acts.npy", mmap_mode="r")
        return self._acts

    @property
    def sae(self):
        if self._sae is None:
            from steering_core.model.saes import load_sae_from_disk

            self._sae = load_sae_from_disk(self.dir / "sae", self.model)
        return self._sae

    def done(self, stage: str) -> bool:
        return stage_done(self.con, stage)

    def finish(self, stage: str, info: dict | None = None, meta: dict | None = None) -> None:
        with transaction(self.con):
            if meta:
                set_meta(self.con, meta)
            mark_stage(self.con, stage, info)
        self.log(f"stage {stage} done {json.dumps(info or {})[:300]}")

    # -- stages ------------------------------------------------------------------------------
    def run(self, until: str | None = None) -> None:
        if until is not None and until not in STAGES:
            raise PackConfigError(f"Unknown stage {until!r}; stages: {STAGES}.")
        self._check_inputs()
        for stage in STAGES:
            if not self.done(stage):
                t0 = time.perf_counter()
                self.log(f"stage {stage} starting")
                getattr(self, f"stage_{stage}")()
                with transaction(self.con):
                    set_meta(self.con, {f"seconds_{stage}": round(time.perf_counter() - t0, 1)})
            if stage == until:
                break

    def _check_inputs(self) -> None:
        layer = self.layer  # validates hook/layer
        if self.cfg.sae != "train":
            from steering_core.model.saes import load_sae

            sae = load_sae(self.cfg.sae, self.model)
            if sae is None:
                raise PackConfigError("sae must be 'train' or an SAE spec (a folder or release:id).")
            if sae.layer != layer:
                raise PackConfigError(f"The SAE reads {sae.hook_name} (block {sae.layer}) but the pack is set to block "
                                      f"{layer}; set hook = \"{sae.hook_name}\".")
        with transaction(self.con):
            set_meta(self.con, {"model_id": self.model.name, "hook_point": hook_name(layer), "layer": str(layer),
                                "d_model": str(self.model.d_model), "config": json.dumps(self.cfg.to_dict())})

    def stage_corpus(self) -> None:
        path = build_corpus(self.model, self.cfg.corpus, self.dir, self.cfg.seed, self.log_path, self.show_bar)
        c = Corpus.load(path)
        gen_tok = int((c.source == 0).sum() * c.tokens.shape[1])
        self.finish("corpus", {"tokens": c.n_tokens}, {
            "corpus_tokens": str(c.n_tokens), "corpus_generated_tokens": str(gen_tok),
            "corpus_package_tokens": str(c.n_tokens - gen_tok), "corpus_windows": str(c.tokens.shape[0]),
            "corpus_heldout_windows": str(int(c.heldout.sum())),
        })

    def stage_activations(self) -> None:
        from steering_core.pack.sae_training import compute_activations

        compute_activations(self.model, self.corpus, self.layer, self.dir / "acts.npy", log_path=self.log_path,
                            show_bar=self.show_bar)
        self.finish("activations")

    def stage_sae(self) -> None:
        from steering_core.model.saes import load_sae, save_sae

        if self.cfg.sae == "train":
            from steering_core.pack.sae_training import train_sae

            sae = train_sae(self.model, self.corpus, self.acts, self.layer, self.cfg.sae_train, self.dir,
                            self.cfg.seed, self.log_path)
            source = f"trained here with sae_lens (TopK k={self.cfg.sae_train.k})"
        else:
            sae = load_sae(self.cfg.sae, self.model)
            tmp = self.dir / "sae.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            save_sae(sae, tmp)
            (tmp / "COMPLETE").write_text("ok")
            shutil.rmtree(self.dir / "sae", ignore_errors=True)
            tmp.rename(self.dir / "sae")
            source = self.cfg.sae
        self._sae = None
        if sae.d_in != self.model.d_model:
            raise PackConfigError(f"The SAE reads vectors of size {sae.d_in}, the model's residual has {self.model.d_model}.")
        self.finish("sae", {"d_sae": sae.d_sae}, {"sae_id": source, "d_sae": str(sae.d_sae),
                                                  "sae_architecture": sae.architecture})

    def stage_sae_eval(self) -> None:
        from steering_core.pack.sae_training import evaluate_sae

        m = evaluate_sae(self.model, self.sae, self.corpus, self.acts, self.layer)
        self.finish("sae_eval", m.to_dict(), {f"sae_{k}": json.dumps(v) for k, v in m.to_dict().items()})

    def stage_stats(self) -> None:
        from steering_core.model.embeddings import embed_texts
        from steering_core.pack.stats import feature_statistics

        st = feature_statistics(self.model, self.sae, self.corpus, self.acts, self.cfg.stats, self.log_path,
                                self.show_bar)
        emb = embed_texts(st.labels)
        rows = [(i, st.labels[i], st.labels[i], "", float(st.density[i]), float(st.mean_act[i]), float(st.max_act[i]),
                 bool(st.density[i] > 0), st.hist_counts[i].tolist(), float(st.max_act[i]), st.top_tokens[i],
                 st.top_logits[i], st.bottom_logits[i]) for i in range(len(st.labels))]
        snips = [(s.feature_id, s.kind, s.rank, s.max_act, s.tokens, s.acts) for s in st.snippets]
        with transaction(self.con):
            self.con.execute("DELETE FROM features")
            self.con.execute("DELETE FROM feature_snippets")
            self.con.execute("DELETE FROM label_embeddings")
            self.con.executemany(
                "INSERT INTO features (feature_id, label, auto_label, notes, density, mean_act, max_act, live, "
                "hist_counts, hist_max, top_tokens, top_logits, bottom_logits) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            _insert_df(self.con, "feature_snippets", snips,
                       ["feature_id", "kind", "rank", "max_act", "tokens", "acts"])
            _insert_df(self.con, "label_embeddings", [(i, emb[i].tolist()) for i in range(len(emb))],
                       ["feature_id", "embedding"])
            set_meta(self.con, {"stats_tokens": str(st.n_tokens),
                                "dead_fraction_corpus": json.dumps(float(1 - st.live.mean())),
                                "dense_features": str(int((st.density > self.cfg.dense_threshold).sum()))})
            mark_stage(self.con, "stats", {"live": int(st.live.sum())})
        self.log(f"stage stats done: {int(st.live.sum())} live of {len(st.labels)}")

    # -- effects -----------------------------------------------------------------------------
    def ref_ids(self) -> torch.Tensor:
        c = self.corpus
        wins = np.nonzero(c.heldout)[0][: self.cfg.alpha.ref_windows]
        return torch.from_numpy(c.tokens[wins, : self.cfg.alpha.ref_tokens]).to(self.model.device)

    def live_ids(self) -> list[int]:
        return [r[0] for r in self.con.execute("SELECT feature_id FROM features WHERE live ORDER BY feature_id").fetchall()]

    def directions(self, ids: list[int]) -> torch.Tensor:
        w = self.sae.sae.W_dec.detach().float()[ids]
        return w / w.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def baseline(self) -> torch.Tensor:
        path = self.dir / "baseline.npy"
        if not path.exists():
            self.log("measuring the unsteered baseline")
            b = measure_baseline(self.model, self.sae, self.layer, self.cfg.effects, self.cfg.seed)
            tmp = self.dir / "baseline.tmp.npy"
            np.save(tmp, b.numpy())
            tmp.replace(path)
        return torch.from_numpy(np.load(path))

    def stage_effects(self) -> None:
        from steering_core.measure.alpha import loss_matched_alpha

        spec, d_sae = self.cfg.effects, self.sae.d_sae
        live = self.live_ids()
        per = spec.vectors_per_call
        chunks = [live[i:i + per] for i in range(0, len(live), per)]
        base = self.baseline()
        ref = self.ref_ids()
        mat_path = self.dir / "effects.npy"
        mode = "r+" if mat_path.exists() else "w+"
        mat = np.lib.format.open_memmap(mat_path, mode=mode, dtype=np.float32, shape=(d_sae, d_sae))
        done = {r[0] for r in self.con.execute("SELECT chunk FROM effect_chunks").fetchall()}
        with transaction(self.con):
            set_meta(self.con, {"effects_rollouts": json.dumps(spec.to_dict()), "alpha_spec": json.dumps(
                dataclasses.asdict(self.cfg.alpha)), "effects_features_per_call": str(per),
                "effects_baseline_rollouts": str(len(spec.prompts) * spec.baseline_rollouts_per_prompt)})
            self.con.execute("UPDATE features SET baseline_act = v FROM (SELECT unnest(range(?)) AS i, unnest(?) AS v) "
                             "AS b WHERE feature_id = b.i", [d_sae, base.tolist()])
        with Progress(len(chunks), "effects", initial=len(done), log_path=self.log_path, show_bar=self.show_bar) as bar:
            for ci, ids in enumerate(chunks):
                if ci in done:
                    continue
                dirs = self.directions(ids)
                a = loss_matched_alpha(self.model, ref, self.layer, dirs, self.cfg.alpha.target_dce,
                                       tolerance=self.cfg.alpha.tolerance, symmetric=self.cfg.alpha.symmetric)
                eff = steered_feature_means(self.model, self.sae, self.layer, dirs, a.alpha, spec,
                                            self.cfg.seed) - base.unsqueeze(0)
                mat[ids] = eff.numpy()
                mat.flush()
                _crash_point(f"effects:{ci}:before_commit")
                self._commit_effects(ci, ids, eff, base, a.alpha, a.dce)
                _crash_point(f"effects:{ci}:after_commit")
                bar.update(1)
        self.finish("effects", {"chunks": len(chunks), "features": len(live)},
                    {"effects_measured_features": str(len(live))})

    def _commit_effects(self, ci, ids, eff, base, alphas, dces) -> None:
        k = self.cfg.top_effects
        idx, val = top_effects(eff, k)
        rel = relative_effect(eff, base).gather(-1, idx)
        rows = [(ids[r], int(idx[r, j]), float(val[r, j]), float(rel[r, j]), j)
                for r in range(len(ids)) for j in range(idx.shape[1])]
        with transaction(self.con):
            self.con.execute("DELETE FROM feature_effects WHERE source_feature IN (SELECT unnest(?))", [ids])
            _insert_df(self.con, "feature_effects", rows,
                       ["source_feature", "target_feature", "effect", "rel_effect", "rank"])
            self.con.executemany("UPDATE features SET alpha = ?, alpha_dce = ?, measured = true WHERE feature_id = ?",
                                 [(float(alphas[r]), float(dces[r]), ids[r]) for r in range(len(ids))])
            self.con.execute("INSERT OR REPLACE INTO effect_chunks VALUES (?, ?)", [ci, len(ids)])

    def effect_matrix(self) -> tuple[np.ndarray, list[int]]:
        live = self.live_ids()
        mat = np.load(self.dir / "effects.npy", mmap_mode="r")
        return np.asarray(mat[live]), live

    def stage_neighbors(self) -> None:
        k = self.cfg.neighbors
        w = self.directions(list(range(self.sae.d_sae)))
        eff, live = self.effect_matrix()
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
        # actions of feature t: the sources whose effects raise t most
        v, i = e.T.topk(min(k, e.shape[0]), -1)  # [d_sae targets, k]
        for t in range(e.shape[1]):
            rows += [("action", t, live[int(i[t, j])], float(v[t, j]), j) for j in range(v.shape[1]) if v[t, j] > 0]
        with transaction(self.con):
            self.con.execute("DELETE FROM feature_neighbors")
            _insert_df(self.con, "feature_neighbors", rows, ["kind", "feature_id", "other_id", "value", "rank"])
            mark_stage(self.con, "neighbors", {"rows": len(rows)})
        self.log(f"stage neighbors done ({len(rows)} rows)")

    def stage_approximator(self) -> None:
        from steering_core.measure.approximator import fit_approximator

        eff, live = self.effect_matrix()
        ap = fit_approximator(self.directions(live), torch.from_numpy(eff), seed=self.cfg.seed)
        ap.save(self.dir / "approximator.safetensors")
        self.finish("approximator", {"r2_heldout": ap.r2_heldout, "ridge": ap.ridge},
                    {"approximator_r2_heldout": json.dumps(ap.r2_heldout), "approximator_ridge": json.dumps(ap.ridge),
                     "approximator_pairs": str(ap.n_train)})

    def stage_maps(self) -> None:
        from steering_core.pack.maps import clusters, umap_2d

        t0 = time.perf_counter()
        eff, live = self.effect_matrix()
        w = self.directions(live).numpy()
        dec = umap_2d(w, self.cfg.seed)
        effm = umap_2d(eff, self.cfg.seed)
        cl = clusters(w, seed=self.cfg.seed)
        rows = [(float(dec[r, 0]), float(dec[r, 1]), float(effm[r, 0]), float(effm[r, 1]), int(cl[r]), f)
                for r, f in enumerate(live)]
        with transaction(self.con):
            self.con.executemany("UPDATE features SET dec_x = ?, dec_y = ?, eff_x = ?, eff_y = ?, cluster = ? "
                                 "WHERE feature_id = ?", rows)
            set_meta(self.con, {"umap_build_s": f"{time.perf_counter() - t0:.1f}"})
            mark_stage(self.con, "maps", {"points": len(rows)})
        self.log("stage maps done")

    def stage_stability(self) -> None:
        """Re-measure random non-dense features with another seed: how many of their top-10
        effects come back, and how many features rank themselves in their own top 10."""
        n = self.cfg.stability_features
        rows = self.con.execute("SELECT feature_id, alpha FROM features WHERE measured AND density <= ? "
                                "ORDER BY feature_id", [self.cfg.dense_threshold]).fetchall()
        rng = np.random.default_rng(self.cfg.seed + 7)
        pick = sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False).tolist()) if rows else []
        ids = [rows[i][0] for i in pick]
        alphas = torch.tensor([rows[i][1] for i in pick], dtype=torch.float32)
        base = self.baseline()
        mat = np.load(self.dir / "effects.npy", mmap_mode="r")
        overlaps = []
        per = self.cfg.effects.vectors_per_call
        for i in range(0, len(ids), per):
            sub = ids[i:i + per]
            eff2 = steered_feature_means(self.model, self.sae, self.layer, self.directions(sub), alphas[i:i + per],
                                         self.cfg.effects, self.cfg.seed + 1) - base.unsqueeze(0)
            for r, f in enumerate(sub):
                a = set(torch.from_numpy(np.array(mat[f])).topk(10).indices.tolist())
                b = set(eff2[r].topk(10).indices.tolist())
                overlaps.append(len(a & b))
        eff, live = self.effect_matrix()
        e = torch.from_numpy(eff)
        top10 = e.topk(min(10, e.shape[1]), -1).indices
        self_rank = float(np.mean([live[r] in set(top10[r].tolist()) for r in range(len(live))])) if live else 0.0
        med = float(np.median(overlaps)) if overlaps else float("nan")
        self.finish("stability", {"median_top10_overlap": med, "self_in_top10": self_rank},
                    {"stability_median_top10_overlap": json.dumps(med), "stability_features": str(len(ids)),
                     "stability_overlaps": json.dumps(overlaps), "self_in_top10_share": json.dumps(self_rank)})

    def stage_ship(self) -> None:
        if not self.cfg.ship_to:
            self.finish("ship", {"shipped": False})
            return
        target = _resolve(self.cfg.ship_to)
        ship_pack(self.con, self.dir, target)
        self.finish("ship", {"to": str(target)})


_PACK_TABLES = ["meta", "features", "feature_snippets", "feature_effects", "feature_neighbors", "label_embeddings"]


def ship_pack(con, workdir: Path, target: Path) -> None:
    """Copy the finished tables into a fresh, compact ``pack.duckdb`` next to the SAE and the
    approximator; the old pack is replaced only once the new one is complete."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(workdir / "sae", tmp / "sae")
    (tmp / "sae" / "COMPLETE").unlink(missing_ok=True)
    if (workdir / "approximator.safetensors").exists():
        shutil.copy2(workdir / "approximator.safetensors", tmp / "approximator.safetensors")
    if (workdir / "baseline.npy").exists():
        shutil.copy2(workdir / "baseline.npy", tmp / "baseline.npy")
    db = tmp / "pack.duckdb"
    con.execute(f"ATTACH '{db}' AS shipped")
    try:
        con.execute("USE shipped")
        ensure_schema(con)
        con.execute("USE build")
        for t in _PACK_TABLES:
            con.execute(f"INSERT INTO shipped.{t} SELECT * FROM build.main.{t}")
        con.execute("INSERT OR REPLACE INTO shipped.meta VALUES ('build_date', ?)",
                    [_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")])
        con.execute("DROP TABLE shipped.effect_chunks")
        con.execute("DROP TABLE shipped.stages")
    finally:
        con.execute("USE build")
        con.execute("DETACH shipped")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _crash_point(name: str) -> None:
    """Test hook: ``STEERING_PACK_CRASH_AT=name`` SIGKILLs the build right here, so tests can
    prove that a kill at the worst moment loses nothing."""
    from steering_core.storage.crashpoints import crash_point

    crash_point(name, env="STEERING_PACK_CRASH_AT")


def _insert_df(con, table: str, rows: list[tuple], cols: list[str]) -> None:
    """Bulk insert through a DataFrame (executemany is slow for 10⁵ rows)."""
    if not rows:
        return
    import pandas as pd

    df = pd.DataFrame(rows, columns=cols)
    con.register("_bulk", df)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _bulk")
    finally:
        con.unregister("_bulk")


def status(cfg: PackConfig) -> dict:
    """Which stages are done and the tail of the build log (for a background build)."""
    d = cfg.workdir
    out = {"workdir": str(d), "done": [], "log_tail": []}
    if (d / "build.duckdb").exists():
        try:
            con = connect(d / "build.duckdb", read_only=True)
            out["done"] = [r[0] for r in con.execute("SELECT stage FROM stages").fetchall()]
            con.close()
        except StoreError as exc:
            out["done"] = [f"(database busy: {exc})"]
    if (d / "build.log").exists():
        out["log_tail"] = (d / "build.log").read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m steering_core.pack", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or resume a pack")
    b.add_argument("config")
    b.add_argument("--until", choices=STAGES, help="stop after this stage")
    b.add_argument("--quiet", action="store_true", help="no progress bars (log file only)")
    s = sub.add_parser("status", help="stages done and the last log lines")
    s.add_argument("config")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = load_config(args.config)
        if args.cmd == "status":
            print(json.dumps(status(cfg), indent=1))
            return 0
        model = load_model(cfg.model)
        resolve_layer(cfg, model)  # a hook or layer the model lacks is refused before anything is written
        Builder(cfg, show_bar=not args.quiet, model=model).run(args.until)
    except SteeringCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == 28:
            print(f"error: the disk is full ({exc}); finished stages are kept, rerun the same command to resume.",
                  file=sys.stderr)
            return 3
        raise
    except Exception as exc:
        import duckdb

        if isinstance(exc, duckdb.Error):
            print(f"error: a database write failed ({str(exc).splitlines()[0]}); the transaction was rolled back, "
                  "finished work is kept, rerun the same command to resume.", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
