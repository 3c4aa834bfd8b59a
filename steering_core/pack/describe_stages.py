"""The describing stages of a pack build (docs/design.md §Output descriptions, §Feature descriptions):

* ``outputs``: per feature, exactly (no sampling), the tokens whose next-token probability
  steering at the feature's α raises and lowers most over the effect prompts (TokenChange), and
  the output score (probability mass moved onto its own top-20 logit-lens tokens). The same score
  for the control stage's random directions gives the bar a feature must clear to "steer well".
* ``labels``: the readable label and description of every feature from both sides (input tokens
  by specificity and context words from ``stats``, TokenChange from ``outputs``), and the
  embeddings semantic search reads (of the description's words: what it fires on, around, and
  what steering raises).

Both are cheap (one forward pass per chunk of features, no rollouts), so they rerun whenever the
statistics or effects change."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import torch

import steering_core.pack.derived_stages  # noqa: F401  (declared before outputs and labels: the run order)
from steering_core.pack import tables
from steering_core.pack.effect_stages import control_directions, directions, loss_matched
from steering_core.pack.sinks import SINK_FEATURE_SHARE, SINK_LABEL
from steering_core.pack.stages import stage
from steering_core.pack.tables import mark_stage, set_meta
from steering_core.progress import Progress
from steering_core.storage.db import transaction

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder

#: Logit-lens tokens per direction the output score counts as "its own".
LENS_K = 20
#: Percentile of the random directions' output scores a feature must exceed to "steer well".
STEERS_WELL_PERCENTILE = 95


def _shift_rows(b: Builder, dirs: torch.Tensor, alphas: torch.Tensor, label: str):
    """TokenChange and output score of each direction, chunk by chunk."""
    from steering_core.measure.outputs import logit_lens_top, next_token_shift, output_score, token_change
    from steering_core.pack.stats import unembedding

    w_u = unembedding(b.model)
    out = []
    with Progress(max(1, dirs.shape[0]), label, log_path=b.log_path, show_bar=b.show_bar) as bar:
        for i in range(0, dirs.shape[0], 64):
            d, a = dirs[i:i + 64], alphas[i:i + 64]
            shift = next_token_shift(b.model, b.cfg.effects.prompts, b.layer, d, a)
            tc = token_change(shift, k=10)
            score = output_score(shift, logit_lens_top(d.to(w_u.device), w_u, k=LENS_K))
            for r in range(d.shape[0]):
                out.append(([b.model.decode([int(t)]) for t in tc.gain_ids[r]], tc.gains[r].tolist(),
                            [b.model.decode([int(t)]) for t in tc.loss_ids[r]], tc.losses[r].tolist(),
                            float(score[r])))
            bar.update(d.shape[0])
    return out


@stage("outputs", needs=("effects",))
def outputs(b: Builder) -> None:
    alpha = dict(b.con.execute("SELECT feature_id, alpha FROM features WHERE alpha IS NOT NULL").fetchall())
    ids = [f for f in range(b.sae.d_sae) if f in alpha]
    got = _shift_rows(b, directions(b, ids), torch.tensor([alpha[f] for f in ids], dtype=torch.float32), "outputs")
    rows = [(f, *r) for f, r in zip(ids, got)]
    rand = control_directions(b)
    rand_scores = [r[-1] for r in _shift_rows(b, rand, loss_matched(b, rand).alpha.float(), "outputs (random)")]
    bar = float(np.percentile(rand_scores, STEERS_WELL_PERCENTILE)) if rand_scores else float("nan")
    with transaction(b.con):
        tables.replace_outputs(b.con, rows)
        set_meta(b.con, {"outputs_contexts": str(len(b.cfg.effects.prompts)), "outputs_lens_k": str(LENS_K),
                         "output_score_random": json.dumps([round(x, 6) for x in rand_scores]),
                         "output_score_steers_well": json.dumps(bar),
                         "output_score_steers_well_percentile": str(STEERS_WELL_PERCENTILE)})
        mark_stage(b.con, "outputs", {"features": len(rows), "steers_well_bar": bar})
    b.log(f"stage outputs done ({len(rows)} features; steers-well bar {bar:.4f})")


def relabel(con) -> int:
    """Write every feature's label, description and search embedding from what the pack stores
    (input tokens and context from ``stats``, TokenChange and output score from ``outputs``); no
    model needed, so a finished or shipped pack can be relabelled when the rule changes.

    Output words enter a label only for features that steer well (output score above the random
    directions' bar): below it, the tokens TokenChange ranks first are the generic response and
    noise (in the embedded pack, 1,272 of the 1,397 labels built before this rule named such words,
    "wedding, travel, trip → prediction, data" among them). A feature that fires mostly on attention
    sinks is labelled "attention sink · …" first, since its words come from sink positions.
    Returns the number of features."""
    from steering_core.describe.labels import feature_description, feature_label, search_text
    from steering_core.model.embeddings import embed_texts

    bar = tables.get_meta(con).get("output_score_steers_well")
    bar = float(bar) if bar not in (None, "", "null") else None
    columns = {r[0] for r in con.execute("DESCRIBE features").fetchall()}
    sink_col = "f.sink_share" if "sink_share" in columns else "NULL"  # a pack from before the sinks stage
    feats = con.execute("SELECT f.feature_id, f.live, f.top_tokens, f.context_words, f.top_logits, o.gains, o.losses, "
                        f"f.output_score, {sink_col} FROM features f LEFT JOIN feature_outputs o USING (feature_id) "
                        "ORDER BY f.feature_id").fetchall()
    rows, texts = [], []
    for fid, live, top, ctx, lens, gains, losses, score, sink in feats:
        if not live:
            rows.append(("dead feature", "", fid))
            texts.append("dead feature")
            continue
        # no outputs stage: the logit lens stands in (said in docs/design.md); measured: the bar decides
        steers = gains is None or bar is None or (score is not None and score >= bar)
        promoted = (gains if gains is not None else (lens or [])) if steers else []
        # a sink feature's words are read off sink positions: its label says so first (pack.sinks)
        sinks = sink is not None and sink > SINK_FEATURE_SHARE
        rows.append(((SINK_LABEL if sinks else "") + feature_label(top or [], promoted),
                     feature_description(top or [], ctx or [], promoted, (losses or []) if steers else [], steers),
                     fid))
        texts.append(("attention sink, " if sinks else "") + search_text(top or [], ctx or [], promoted)
                     or rows[-1][0])
    emb = embed_texts(texts)
    with transaction(con):
        tables.set_labels(con, rows, [(fid, emb[i].tolist()) for i, (_, _, fid) in enumerate(rows)])
        set_meta(con, {"label_embedding_of": "description", "label_rule": "outputs-if-steers-well"})
    return len(rows)


@stage("labels", needs=("stats", "outputs", "sinks"))
def labels(b: Builder) -> None:
    n = relabel(b.con)
    with transaction(b.con):
        mark_stage(b.con, "labels", {"features": n})
    b.log(f"stage labels done ({n} features)")
