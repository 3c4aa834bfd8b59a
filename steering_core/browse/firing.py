""""What fires here": the SAE features most active on each token of a text the user types.

The other way into the browser: instead of searching labels, paste text where the behaviour
shows and read off which features carry it. Runs the model unsteered and encodes the residual
at the SAE's own block (features mean nothing anywhere else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from steering_core.browse.rows import ExploreError, check_k, feature_table
from steering_core.pack.reader import FeaturePack

if TYPE_CHECKING:  # pragma: no cover
    from steering_core.browse.usernotes import UserNotes
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel

#: Longest text accepted (characters); the model's context length limits it again in tokens.
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class Firing:
    """One feature active on one token."""

    feature_id: int
    activation: float
    label: str = ""


@dataclass(frozen=True)
class TokenFeatures:
    """A token of the typed text and the features that fire most on it (strongest first)."""

    position: int
    token_id: int
    token: str
    features: tuple[Firing, ...]


def top_per_token(feats: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row of ``[tokens, d_sae]`` activations, the ``k`` largest positive ones as
    ``(feature, activation)``, strongest first, ties by id."""
    out = []
    for row in np.asarray(feats, dtype=np.float64):
        idx = np.nonzero(row > 0)[0]
        order = idx[np.lexsort((idx, -row[idx]))][:k]
        out.append([(int(i), float(row[i])) for i in order])
    return out


def what_fires_here(model: SteerableModel, sae: LoadedSAE, layer: int | None, text: Any, k: int = 5,
                    pack: FeaturePack | None = None, notes: "UserNotes | None" = None) -> list[TokenFeatures]:
    """Run the text through the model (unsteered), encode the residual after the SAE's block,
    and list the top-``k`` active features of every token. ``layer`` must be the block the SAE
    reads (``None``: the SAE's own); with ``pack`` the features carry their labels."""
    from steering_core.model.steering import record_residuals

    if not isinstance(text, str) or not text.strip():
        raise ExploreError("Type some text to see which features fire on it.")
    if len(text) > MAX_TEXT_CHARS:
        raise ExploreError(f"That text is too long ({len(text):,} characters); paste at most {MAX_TEXT_CHARS:,}.")
    k = check_k(k)
    layer = sae.layer if layer is None else layer
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or int(layer) != sae.layer:
        raise ExploreError(f"The SAE reads the output of block {sae.layer} ({sae.hook_name}); its features mean "
                           f"nothing at layer {layer!r}.")
    ids, mask = model.tokenize([text])
    if ids.shape[1] > model.n_ctx:
        raise ExploreError(f"That text is {ids.shape[1]} tokens; {model.name} reads at most {model.n_ctx}.")
    acts = record_residuals(model, ids, mask, [int(layer)])[int(layer)][0]  # [pos, d_model]
    keep = mask[0].bool()
    feats = sae.encode(acts[keep].float()).float().cpu().numpy()
    tok_ids = ids[0][keep].tolist()
    labels = feature_table(pack).label_of if pack is not None else (lambda _f: "")
    mine = notes.labels(pack) if (pack is not None and notes is not None) else {}
    out = []
    for pos, (tid, top) in enumerate(zip(tok_ids, top_per_token(feats, k))):
        token = model.tokenizer.decode([int(tid)], skip_special_tokens=False)
        out.append(TokenFeatures(pos, int(tid), token,
                                 tuple(Firing(f, a, mine.get(f) or labels(f)) for f, a in top)))
    return out


__all__ = ["Firing", "MAX_TEXT_CHARS", "TokenFeatures", "top_per_token", "what_fires_here"]
