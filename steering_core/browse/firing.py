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
    """A token of the typed text and the features that fire most on it (strongest first).
    ``strength`` is the top feature's activation as a share of that feature's largest activation
    on the pack corpus (0–1; the colour of the token), so a dense feature's routine firing does not
    paint every token the same. ``skipped`` tokens (position 0, an attention sink with activations
    in the thousands, and chat-template tokens) are shown but never analysed."""

    position: int
    token_id: int
    token: str
    features: tuple[Firing, ...]
    strength: float = 0.0
    skipped: bool = False


@dataclass(frozen=True)
class FeatureReading:
    """One feature on every token of a typed text: ``acts[i]`` is its activation on ``tokens[i]``
    (None where the token is skipped); ``scale`` is the feature's largest activation on the pack
    corpus (None without a pack), so colours mean the same on every text."""

    feature_id: int
    tokens: tuple[str, ...]
    acts: tuple[float | None, ...]
    scale: float | None

    def strength(self, i: int) -> float:
        a = self.acts[i]
        if a is None or a <= 0:
            return 0.0
        top = self.scale or max((x for x in self.acts if x is not None), default=0.0) or 1.0
        return min(1.0, a / top)


def top_per_token(feats: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row of ``[tokens, d_sae]`` activations, the ``k`` largest positive ones as
    ``(feature, activation)``, strongest first, ties by id."""
    out = []
    for row in np.asarray(feats, dtype=np.float64):
        idx = np.nonzero(row > 0)[0]
        order = idx[np.lexsort((idx, -row[idx]))][:k]
        out.append([(int(i), float(row[i])) for i in order])
    return out


def _check_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ExploreError("Type some text to see which features fire on it.")
    if len(text) > MAX_TEXT_CHARS:
        raise ExploreError(f"That text is too long ({len(text):,} characters); paste at most {MAX_TEXT_CHARS:,}.")
    return text


def encode_text(model: SteerableModel, sae: LoadedSAE, layer: int | None, text: Any
                ) -> tuple[list[int], list[str], np.ndarray, np.ndarray]:
    """Run the text through the model (unsteered) and encode the residual after the SAE's block:
    ``(token ids, token strings, activations [pos, d_sae], skipped [pos])``. Position 0 and
    special (template) tokens are marked skipped and their activations zeroed."""
    from steering_core.model.recording import record_residuals

    text = _check_text(text)
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
    tok_ids = [int(t) for t in ids[0][keep].tolist()]
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    skipped = np.array([i == 0 or t in special for i, t in enumerate(tok_ids)], dtype=bool)
    feats[skipped] = 0.0
    tokens = [model.tokenizer.decode([t], skip_special_tokens=False) for t in tok_ids]
    return tok_ids, tokens, feats, skipped


def what_fires_here(model: SteerableModel, sae: LoadedSAE, layer: int | None, text: Any, k: int = 5,
                    pack: FeaturePack | None = None, notes: "UserNotes | None" = None,
                    max_density: float | None = None) -> list[TokenFeatures]:
    """The top-``k`` active features of every token of the text. ``layer`` must be the block the
    SAE reads (``None``: the SAE's own); with ``pack`` the features carry their labels, features
    denser than ``max_density`` are left out (the browser's dense filter) and each token's colour
    strength is scaled by its top feature's own maximum."""
    k = check_k(k)
    tok_ids, tokens, feats, skipped = encode_text(model, sae, layer, text)
    table = feature_table(pack) if pack is not None else None
    if table is not None and max_density is not None:
        dense = np.nan_to_num(table.density[: feats.shape[1]], nan=0.0) > max_density
        feats[:, np.nonzero(dense)[0]] = 0.0
    labels = table.label_of if table is not None else (lambda _f: "")
    mine = notes.labels(pack) if (pack is not None and notes is not None) else {}
    out = []
    for pos, (tid, tok, top) in enumerate(zip(tok_ids, tokens, top_per_token(feats, k))):
        strength = 0.0
        if top:
            f, a = top[0]
            scale = table.max_act_of(f) if table is not None else None
            strength = min(1.0, a / scale) if scale else min(1.0, a / max(float(feats.max()), 1e-12))
        out.append(TokenFeatures(pos, tid, tok, tuple(Firing(f, a, mine.get(f) or labels(f)) for f, a in top),
                                 strength, bool(skipped[pos])))
    return out


def feature_on_text(model: SteerableModel, sae: LoadedSAE, text: Any, feature_id: int,
                    pack: FeaturePack | None = None) -> FeatureReading:
    """"Test this feature on my text": one feature's activation on every token the user typed, to
    check a label against text the corpus never had."""
    fid = int(feature_id)
    if not 0 <= fid < sae.d_sae:
        raise ExploreError(f"Feature {feature_id!r} is not in this SAE (0 to {sae.d_sae - 1}).")
    _, tokens, feats, skipped = encode_text(model, sae, None, text)
    acts = tuple(None if skipped[i] else float(feats[i, fid]) for i in range(len(tokens)))
    scale = feature_table(pack).max_act_of(fid) if pack is not None else None
    return FeatureReading(fid, tuple(tokens), acts, scale)


__all__ = ["FeatureReading", "Firing", "MAX_TEXT_CHARS", "TokenFeatures", "encode_text", "feature_on_text",
           "top_per_token", "what_fires_here"]
