"""Sink features: the share of each feature's activation on attention-sink tokens equals a direct
computation, the sinks are the tokens over 10× the median norm, and the card's sentence appears
only above the pack's bar (and never for a pack built before sinks were measured)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steering_core.browse.rows import sink_note
from steering_core.model.saes import load_sae
from steering_core.pack.corpus import Corpus
from steering_core.pack.sae_training import SAETrainSpec, token_rows, train_sae
from steering_core.pack.sinks import SINK_FEATURE_SHARE, sink_shares


def test_shares_equal_a_direct_computation_on_planted_sinks(tiny_hf, tmp_path, one_thread):
    n, w = 12, 9
    corpus = Corpus(tokens=np.zeros((n, w), np.int64), source=np.ones(n, np.int64), heldout=np.arange(n) >= 10)
    acts = np.random.default_rng(0).standard_normal((n, w, 64)).astype(np.float16)
    train_sae(tiny_hf, corpus, acts, 1, SAETrainSpec(d_sae=32, k=4, training_tokens=256, batch_size=64,
                                                      n_checkpoints=1), tmp_path, seed=0)
    sae = load_sae(str(tmp_path / "sae"), tiny_hf)
    sink_dir = sae.W_dec[5] / sae.W_dec[5].norm()
    planted = acts.copy()
    for win, pos in ((0, 1), (3, 1), (11, 2)):  # one in a held-out window: all windows count
        planted[win, pos] = (400 * sink_dir).numpy().astype(np.float16)
    planted[2, 0] = (400 * sink_dir).numpy().astype(np.float16)  # position 0: the SAE never sees it
    s = sink_shares(sae, corpus, planted, show_bar=False)
    assert s.sink_tokens == 3 and s.tokens == n * (w - 1)
    rows = np.sort(np.concatenate([token_rows(corpus, heldout=False), token_rows(corpus, heldout=True)]))
    x = torch.from_numpy(planted.reshape(-1, 64)[rows].astype(np.float32))
    assert s.threshold == pytest.approx(10 * float(x.norm(dim=1).median()))
    with torch.no_grad():
        f = sae.encode(x).double()
    sink = x.norm(dim=1) > s.threshold
    total = f.sum(0)
    expect = torch.where(total > 0, f[sink].sum(0) / total.clamp(min=1e-30), torch.zeros_like(total))
    np.testing.assert_allclose(s.share, expect.numpy(), rtol=1e-9, atol=1e-12)
    assert s.share.max() > SINK_FEATURE_SHARE  # the planted direction's features live on the sinks
    assert s.sink_features == int((expect > SINK_FEATURE_SHARE).sum())


class _Pack:
    def __init__(self, meta: dict):
        self._meta = meta

    def meta_json(self, key, default=None):
        return self._meta.get(key, default)


def test_the_card_sentence_names_the_share_and_the_sinks():
    pack = _Pack({"sink_tokens": 157, "sink_factor": 10.0, "sink_feature_share": 0.5})
    note = sink_note(pack, {"sink_share": 0.998})
    assert note.startswith("Fires mostly on attention sinks: 99.8% of its activation is on the 157 attention-sink "
                           "tokens of the pack corpus (residual norm over 10× the median).")
    assert "not a meaning" in note
    assert "72%" in sink_note(pack, {"sink_share": 0.72})
    assert sink_note(pack, {"sink_share": 0.3}) is None
    assert sink_note(_Pack({}), {"sink_share": None}) is None  # a pack from before the sinks stage
    assert sink_note(_Pack({}), {}) is None


def test_relabel_names_sink_features_first_and_leaves_the_others(tmp_path):
    """The labels stage reads ``sink_share``: above the bar the label starts "attention sink · ",
    below it and where the share is unknown (a pack from before the sinks stage) it is unchanged."""
    from steering_core.pack import tables
    from steering_core.pack.describe_stages import relabel
    from steering_core.pack.sinks import SINK_LABEL
    from steering_core.storage.db import connect

    con = connect(tmp_path / "p.duckdb")
    tables.ensure_schema(con)
    top = ["▁wedding", "▁bride"]
    for fid, share in ((0, 0.9), (1, 0.2), (2, None)):
        con.execute("INSERT INTO features (feature_id, live, top_tokens, context_words, top_logits, sink_share) "
                    "VALUES (?, true, ?, [], [], ?)", [fid, top, share])
    relabel(con)
    labels = dict(con.execute("SELECT feature_id, label FROM features").fetchall())
    con.close()
    assert labels[1] == labels[2] and not labels[1].startswith(SINK_LABEL)
    assert labels[0] == SINK_LABEL + labels[1]
