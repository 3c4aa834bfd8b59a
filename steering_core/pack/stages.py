"""The stages of a pack build up to the feature statistics, each one function declared with the
stages it needs; the effect stages are in :mod:`steering_core.pack.effect_stages` and the whole
pipeline, shipping included, in :mod:`steering_core.pack.pipeline`.

Adding a stage is one decorated function: ``@stage("name", needs=("stats",))``. The run
order is derived from the declarations (see :class:`StageRegistry`). A stage body gets the
:class:`~steering_core.pack.builder.Builder` (model, corpus, activations, SAE, database, log) and
must record its own completion (``b.finish`` or ``mark_stage``) in the same transaction as its
outputs, only once they are durable; that is what makes a build resumable after ``kill -9``
(docs/design.md §Storage contract)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steering_core.pack import tables
from steering_core.pack.config import PackConfigError
from steering_core.pack.corpus import Corpus, build_corpus
from steering_core.pack.registry import StageRegistry
from steering_core.pack.tables import mark_stage, set_meta
from steering_core.storage.db import transaction
from steering_core.storage.files import make_tree_readable

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder

#: The pack pipeline; ``Builder`` runs it in ``PIPELINE.order()``.
PIPELINE = StageRegistry()
stage = PIPELINE.stage


@stage("corpus", files=("corpus.npz", "parts"))
def corpus(b: Builder) -> None:
    path = build_corpus(b.model, b.cfg.corpus, b.dir, b.cfg.seed, b.log_path, b.show_bar)
    c = Corpus.load(path)
    gen_tok = int((c.source == 0).sum() * c.tokens.shape[1])
    b.finish("corpus", {"tokens": c.n_tokens}, {
        "corpus_tokens": str(c.n_tokens), "corpus_generated_tokens": str(gen_tok),
        "corpus_package_tokens": str(c.n_tokens - gen_tok), "corpus_windows": str(c.tokens.shape[0]),
        "corpus_heldout_windows": str(int(c.heldout.sum())),
    })


@stage("activations", needs=("corpus",), files=("acts.npy", "acts.progress.json"))
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

        trained = train_sae(b.model, b.corpus, b.acts, b.layer, b.cfg.sae_train, b.dir, b.cfg.seed, b.log_path,
                            show_bar=b.show_bar)
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
    from steering_core.describe.labels import search_text

    emb = embed_texts([(search_text(st.top_tokens[i], st.context[i]) if st.live[i] else "") or st.labels[i]
                       for i in range(len(st.labels))])
    rows = [(i, st.labels[i], st.labels[i], "", float(st.density[i]), float(st.mean_act[i]), float(st.max_act[i]),
             bool(st.density[i] > 0), st.hist_counts[i].tolist(), float(st.max_act[i]), st.top_tokens[i],
             st.top_logits[i], st.bottom_logits[i], st.descriptions[i], st.context[i]) for i in range(len(st.labels))]
    snips = [(s.feature_id, s.kind, s.rank, s.max_act, s.tokens, s.acts, s.similar) for s in st.snippets]
    with transaction(b.con):
        tables.replace_features(b.con, rows, snips, [(i, emb[i].tolist()) for i in range(len(emb))])
        set_meta(b.con, {"stats_tokens": str(st.n_tokens),
                         "dead_fraction_corpus": json.dumps(float(1 - st.live.mean())),
                         "dense_features": str(int((st.density > b.cfg.dense_threshold).sum()))})
        mark_stage(b.con, "stats", {"live": int(st.live.sum())})
    b.log(f"stage stats done: {int(st.live.sum())} live of {len(st.labels)}")


def ship_pack(con: Any, workdir: Path, target: Path) -> None:
    """Copy the finished tables into a fresh, compact ``pack.duckdb`` next to the SAE and the
    approximator; the old pack is replaced only once the new one is complete."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(workdir / "sae", tmp / "sae")
    (tmp / "sae" / "COMPLETE").unlink(missing_ok=True)
    for name in ("approximator.safetensors", "baseline.npy", "baseline_rows.npy", "generic.npz"):
        if (workdir / name).exists():
            shutil.copy2(workdir / name, tmp / name)
    tables.copy_into_pack(con, tmp / "pack.duckdb")
    make_tree_readable(tmp)  # safetensors writes 0600; a pack is read by whoever serves it
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
