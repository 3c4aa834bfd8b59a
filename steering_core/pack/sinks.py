"""Which features fire on attention sinks, so a card can say so.

A window's first tokens can become attention sinks whose residual norm is over a hundred times
an ordinary token's (:mod:`steering_core.measure.reconstruction`). The SAE spends features on
them: on the embedded pack about 20 of 3,072 put more than half of their activation on the 157
sink tokens of 647,021, and their labels ("al, numbers, Gold") are read off those positions, not
off a meaning. The ``sinks`` stage stores each feature's share of its activation that falls on
sink tokens (``features.sink_share``) and the count and cut in ``meta``, so the labels stage can
name them ("attention sink · al, numbers, …") and their cards say so, instead of leaving a
researcher to decode the label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from steering_core.model.massive import MASSIVE_FACTOR, massive_threshold
from steering_core.pack.sae_training import token_rows
from steering_core.pack.stages import stage
from steering_core.progress import Progress
from steering_core.storage.db import transaction

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.pack.builder import Builder
    from steering_core.pack.corpus import Corpus

#: A feature with more than this share of its activation on sink tokens is a sink feature.
SINK_FEATURE_SHARE = 0.5
#: What a sink feature's label starts with (the labels stage), so every list says it at a glance.
SINK_LABEL = "attention sink · "


@dataclass
class SinkShares:
    share: np.ndarray  # [d_sae]: Σ activation on sink tokens / Σ activation, 0 for a dead feature
    sink_tokens: int
    tokens: int
    threshold: float  # the residual norm above which a token is a sink

    @property
    def sink_features(self) -> int:
        return int((self.share > SINK_FEATURE_SHARE).sum())


def sink_shares(sae: LoadedSAE, corpus: Corpus, acts: np.ndarray, factor: float = MASSIVE_FACTOR,
                batch_tokens: int = 16384, log_path=None, show_bar: bool = True) -> SinkShares:
    """Each feature's share of its total activation over every token the SAE sees (held-out and
    training windows) that falls on sink tokens, those whose residual norm exceeds ``factor``
    times the median."""
    flat = acts.reshape(-1, acts.shape[-1])
    rows = np.sort(np.concatenate([token_rows(corpus, heldout=False), token_rows(corpus, heldout=True)]))
    spans = [(i, rows[i:i + batch_tokens]) for i in range(0, len(rows), batch_tokens)]
    norms = torch.cat([torch.from_numpy(flat[r].astype(np.float32)).norm(dim=1) for _, r in spans]) \
        if len(rows) else torch.zeros(0)
    cut = massive_threshold(norms, factor)
    total = torch.zeros(sae.d_sae, dtype=torch.float64)
    on_sinks = torch.zeros(sae.d_sae, dtype=torch.float64)
    with torch.no_grad(), Progress(len(spans), "sinks", log_path=log_path, show_bar=show_bar) as bar:
        for i, r in spans:
            f = sae.encode(torch.from_numpy(flat[r].astype(np.float32))).double()
            sink = norms[i:i + len(r)] > cut
            total += f.sum(0)
            on_sinks += f[sink].sum(0)
            bar.update(1)
    share = torch.where(total > 0, on_sinks / total.clamp(min=1e-30), torch.zeros_like(total))
    return SinkShares(share.numpy(), int((norms > cut).sum()), len(rows), cut)


@stage("sinks", needs=("stats",))
def sinks(b: Builder) -> None:
    from steering_core.pack.tables import ensure_schema, mark_stage, set_meta

    s = sink_shares(b.sae, b.corpus, b.acts, log_path=b.log_path, show_bar=b.show_bar)
    with transaction(b.con):
        ensure_schema(b.con)
        b.con.execute("UPDATE features SET sink_share = v FROM (SELECT unnest(range(?)) AS i, unnest(?) AS v) AS s "
                      "WHERE feature_id = s.i", [len(s.share), s.share.tolist()])
        set_meta(b.con, {"sink_tokens": str(s.sink_tokens), "sink_threshold": s.threshold,
                         "sink_factor": MASSIVE_FACTOR, "sink_features": str(s.sink_features),
                         "sink_feature_share": SINK_FEATURE_SHARE})
        mark_stage(b.con, "sinks", {"sink_tokens": s.sink_tokens, "sink_features": s.sink_features})
    b.log(f"stage sinks done: {s.sink_tokens} sink tokens of {s.tokens}; {s.sink_features} features put more "
          f"than {SINK_FEATURE_SHARE:.0%} of their activation on them")


__all__ = ["SINK_FEATURE_SHARE", "SINK_LABEL", "SinkShares", "sink_shares"]
