"""The input side of a feature's description: which tokens it fires on, ranked by specificity,
and the words around them.

Raw counts rank a feature's tokens by how common they are ("the", ",", "\\n" top most lists).
Specificity instead compares the feature's activation-weighted token distribution q_f(t) (its share
of the feature's total activation that lands on token t) with the corpus token distribution p(t),
and scores each token by its term of KL(q_f ‖ p): q_f(t) · log(q_f(t) / p(t)). A token scores high
when the feature spends much of its activation on it *and* it is rarer in the corpus than that
share; tokens the feature fires on no more than chance score zero or below and are dropped.

Pure functions on arrays; the stats stage feeds them one pass over the corpus activations."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from steering_core.describe.words import is_stop_word, is_word


class TokenActivationSums:
    """Σ activation per (feature, token), accumulated batch by batch without a dense
    ``[features, vocab]`` table (10⁸ cells for a 3k-feature SAE on a 49k vocabulary)."""

    def __init__(self, vocab_size: int, coalesce_every: int = 4_000_000):
        self.vocab_size = vocab_size
        self.coalesce_every = coalesce_every
        self._keys: list[torch.Tensor] = []
        self._vals: list[torch.Tensor] = []
        self._pending = 0

    def add(self, features: torch.Tensor, tokens: torch.Tensor, acts: torch.Tensor) -> None:
        """One batch of firings: feature ids, the token id at each firing, its activation."""
        self._keys.append(features.long() * self.vocab_size + tokens.long())
        self._vals.append(acts.double())
        self._pending += features.numel()
        if self._pending >= self.coalesce_every:
            self._coalesce()

    def _coalesce(self) -> None:
        if len(self._keys) <= 1:
            return
        keys, inv = torch.cat(self._keys).unique(return_inverse=True)
        vals = torch.zeros(keys.numel(), dtype=torch.float64).index_add_(0, inv, torch.cat(self._vals))
        self._keys, self._vals, self._pending = [keys], [vals], 0

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(feature, token, sum)`` arrays, sorted by feature then token."""
        self._coalesce()
        if not self._keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        keys, vals = self._keys[0].numpy(), self._vals[0].numpy()
        return keys // self.vocab_size, keys % self.vocab_size, vals


def specificity_scores(feat: np.ndarray, tok: np.ndarray, act_sum: np.ndarray, token_counts: np.ndarray,
                       n_features: int) -> np.ndarray:
    """Per (feature, token) row: q_f(t) · log(q_f(t) / p(t)), with q_f the feature's share of its
    total activation on t and p the corpus frequency of t."""
    total = np.bincount(feat, weights=act_sum, minlength=n_features)
    q = act_sum / np.maximum(total[feat], 1e-30)
    p = token_counts[tok] / max(1, token_counts.sum())
    return q * np.log(np.maximum(q, 1e-30) / np.maximum(p, 1e-30))


def top_specific(feat: np.ndarray, tok: np.ndarray, score: np.ndarray, n_features: int, k: int
                 ) -> list[list[tuple[int, float]]]:
    """Each feature's ``k`` highest-scoring tokens with a positive score, best first (ties by id)."""
    out: list[list[tuple[int, float]]] = [[] for _ in range(n_features)]
    keep = score > 0
    feat, tok, score = feat[keep], tok[keep], score[keep]
    order = np.lexsort((tok, -score, feat))
    feat, tok, score = feat[order], tok[order], score[order]
    starts = np.searchsorted(feat, np.arange(n_features), "left")
    ends = np.searchsorted(feat, np.arange(n_features), "right")
    for f in range(n_features):
        e = min(ends[f], starts[f] + k)
        out[f] = [(int(t), float(s)) for t, s in zip(tok[starts[f]:e], score[starts[f]:e])]
    return out


def context_words(snippets: Sequence[tuple[Sequence[str], int]], token_counts: dict[str, int], n_tokens: int,
                  k: int = 5, exclude: Sequence[str] = ()) -> list[str]:
    """Dictionary words that recur around a feature's peaks: each word scores (number of snippets
    it appears in) × idf, so a word in every snippet beats a common word in a few; function words
    ("the", "and") never count. ``snippets``
    are ``(tokens, peak_index)``; the peak token itself and ``exclude`` are left out."""
    skip = {w.strip().lower() for w in exclude}
    seen: Counter[str] = Counter()
    form: dict[str, str] = {}
    for tokens, peak in snippets:
        words = {t.strip() for i, t in enumerate(tokens)
                 if i != peak and is_word(t) and len(t.strip()) >= 3 and not is_stop_word(t)}
        for w in words:
            key = w.lower()
            if key in skip:
                continue
            seen[key] += 1
            form.setdefault(key, w)
    if not seen:
        return []

    def score(key: str) -> float:
        return seen[key] * math.log(max(2, n_tokens) / (1 + token_counts.get(key, 0)))

    ranked = sorted((w for w in seen if seen[w] >= 2), key=lambda w: (-score(w), w))
    return [form[w] for w in ranked[:k]]


@dataclass(frozen=True)
class SnippetKey:
    """What makes two snippets 'the same' to a reader: the displayed tokens, and the tokens just
    around the peak with the peak itself masked (so copies of one sentence that differ only in the
    highlighted word, or only far from the peak, collapse into one shown as "×N similar")."""

    shown: tuple[int, ...]  # the displayed tokens, the peak masked
    text: tuple[int, ...]  # the displayed tokens as they are
    near: tuple[int, ...]

    def parts(self) -> tuple[tuple, tuple, tuple]:
        """Each of these alone makes two snippets duplicates."""
        return (("s",) + self.shown, ("t",) + self.text, ("n",) + self.near)


def snippet_key(tokens: np.ndarray, peak: int, start: int, end: int, before: int = 6, after: int = 2) -> SnippetKey:
    """The key of the snippet ``tokens[start:end]`` peaking at ``peak`` (indices into ``tokens``)."""
    near = [int(t) for t in tokens[max(start, peak - before):peak]] + [-1] + \
        [int(t) for t in tokens[peak + 1:min(end, peak + after + 1)]]
    text = tuple(int(t) for t in tokens[start:end])
    shown = tuple(t if i != peak else -1 for i, t in zip(range(start, end), text))
    return SnippetKey(shown, text, tuple(near))


def content_span(content: np.ndarray, peak: int, before: int, after: int, first: int = 1) -> tuple[int, int]:
    """``[start, end)`` around ``peak`` that stays inside the content run holding it: a snippet
    never shows the chat template or prompt that precedes a response."""
    s = max(first, peak - before)
    e = min(len(content), peak + after + 1)
    off = np.nonzero(~content[s:peak])[0]
    if off.size:
        s = s + int(off[-1]) + 1
    off = np.nonzero(~content[peak + 1:e])[0]
    if off.size:
        e = peak + 1 + int(off[0])
    return s, e


def collapse_same_text(snippets: list[dict]) -> list[dict]:
    """Snippets as a card lists them, with any whose *shown* text repeats one listed earlier folded
    into it (its ``similar`` count added). The build collapses by token id, but distinct ids can
    show the same text (byte-fallback pieces all print "\ufffd"), and a list of identical lines
    says nothing."""
    out: list[dict] = []
    first: dict[str, dict] = {}
    for snip in snippets:
        key = "".join(snip["tokens"])
        if key in first:
            if snip["kind"] == "top" and first[key]["kind"] == "top":
                first[key]["similar"] = first[key].get("similar", 1) + snip.get("similar", 1)
            continue
        snip = dict(snip)
        first[key] = snip
        out.append(snip)
    return out


__all__ = ["SnippetKey", "TokenActivationSums", "collapse_same_text", "content_span", "context_words", "snippet_key",
           "specificity_scores", "top_specific"]
