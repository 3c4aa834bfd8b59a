"""Finding a feature: by id, by a piece of its label, or by what its label means.

All three return :class:`SearchHit` rows with the user's own labels applied (when ``notes`` is
given), and turn every unusable query into an :class:`~steering_core.browse.rows.ExploreError`
sentence rather than an empty result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from steering_core.browse.rows import ExploreError, check_k, feature_table, with_user_labels
from steering_core.names import unencodable_at
from steering_core.pack.reader import FeaturePack

if TYPE_CHECKING:  # pragma: no cover
    from steering_core.browse.usernotes import UserNotes

#: Longest query accepted (longer text is a paste accident, not a search).
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True)
class SearchHit:
    """A feature found by a search. ``score`` is the cosine for semantic search, else ``None``;
    ``matched`` says which text matched (``id``, ``label``, ``auto_label``, ``user_label``,
    ``semantic``)."""

    feature_id: int
    label: str
    density: float | None
    score: float | None = None
    matched: str = "label"
    output_score: float | None = None  # probability moved onto its own promoted tokens when steering
    steers_well: bool | None = None  # output score above random directions' 95th percentile


#: How search results can be ordered: as the search ranked them, or by output score (best steerers first).
SORTS = ("relevance", "output score")


def arrange_hits(hits: list[SearchHit], sort: str = "relevance", steers_well_only: bool = False) -> list[SearchHit]:
    """Search results filtered to features that steer well (when asked) and ordered by ``sort``;
    features without an output score sort last and never pass the filter."""
    if sort not in SORTS:
        raise ExploreError(f"Sort by one of {list(SORTS)}, not {sort!r}.")
    out = [h for h in hits if h.steers_well] if steers_well_only else list(hits)
    if sort == "output score":
        out.sort(key=lambda h: (h.output_score is None, -(h.output_score or 0.0)))
    return out


def _query_text(text: Any, what: str) -> str:
    if text is None or not isinstance(text, str):
        raise ExploreError(f"Type {what} to search for.")
    q = text.strip()
    if not q:
        raise ExploreError(f"Type {what} to search for; the search box is empty.")
    if unencodable_at(q) is not None:
        raise ExploreError("The search contains a character that cannot be encoded (an unpaired surrogate, at "
                           f"position {unencodable_at(q)}); remove it.")
    if len(q) > MAX_QUERY_CHARS:
        raise ExploreError(f"Searches are at most {MAX_QUERY_CHARS:,} characters; this one has {len(q):,}.")
    return q


def _hit(pack: FeaturePack, fid: int, matched: str, score: float | None) -> SearchHit:
    ft = feature_table(pack)
    return SearchHit(fid, ft.label_of(fid), ft.density_of(fid), score, matched, ft.output_score_of(fid),
                     ft.steers_well(fid))


def search_id(pack: FeaturePack, text: Any, notes: "UserNotes | None" = None) -> SearchHit:
    """The feature with this id (``"12"``, ``" 12 "`` and ``"#12"`` all work); a sentence for
    anything else."""
    if text is None or isinstance(text, str):
        q = _query_text(text, "a feature id")
        fid = pack.check_feature(q[1:] if q.startswith("#") else q)
    else:
        fid = pack.check_feature(text)  # ints pass; bools, floats and the rest get its sentence
    return with_user_labels(pack, [_hit(pack, fid, "id", None)], notes)[0]


def match_rank(query: str, text: str | None) -> tuple[int, int] | None:
    """How well ``text`` matches a lower-cased ``query``: (0 exact, 1 prefix, 2 word start,
    3 inside; position), or ``None`` for no match. Lower is better."""
    if not text:
        return None
    t = text.lower()
    pos = t.find(query)
    if pos < 0:
        return None
    if t == query:
        return (0, 0)
    if pos == 0:
        return (1, 0)
    if not t[pos - 1].isalnum():
        return (2, pos)
    return (3, pos)


def search_label(pack: FeaturePack, text: Any, k: int = 50, notes: "UserNotes | None" = None) -> list[SearchHit]:
    """Features whose label, auto label or (with ``notes``) the user's own label contains the
    text, case-insensitively; best matches first (exact, prefix, word start, anywhere), ties by
    id. Empty when nothing matches."""
    q = _query_text(text, "part of a label").lower()
    k = check_k(k)
    best: dict[int, tuple[tuple[int, int], str]] = {}

    def offer(fid: int, label: str | None, how: str) -> None:
        r = match_rank(q, label)
        if r is not None and (fid not in best or r < best[fid][0]):
            best[fid] = (r, how)

    for fid, label, auto, _d in pack.label_matches(q):
        offer(int(fid), label, "label")
        offer(int(fid), auto, "auto_label")
    if notes is not None:
        for fid, label in notes.labels(pack).items():
            if 0 <= fid < pack.n_features:
                offer(fid, label, "user_label")
    order = sorted(best, key=lambda f: (best[f][0], f))[:k]
    hits = [_hit(pack, f, best[f][1], None) for f in order]
    return with_user_labels(pack, hits, notes)


def semantic_search(pack: FeaturePack, text: Any, k: int = 20, notes: "UserNotes | None" = None,
                    embed: Callable[[list[str]], np.ndarray] | None = None) -> list[SearchHit]:
    """Features whose descriptions *mean* something close to the query: cosine between MiniLM
    embeddings of the query and of each feature's description (words from both sides, never raw
    subword pieces; older packs embedded the label; the user's
    own labels, if ``notes`` is given, are embedded here and a feature scores its better label).
    ``embed`` replaces the encoder (tests, other encoders)."""
    q = _query_text(text, "a description")
    k = check_k(k)
    ids, emb = pack.label_embedding_matrix()
    if embed is None:
        from steering_core.model.embeddings import embed_texts as embed
    mine = notes.labels(pack) if notes is not None else {}
    if len(ids) == 0 and not mine:
        raise ExploreError("This pack has no label embeddings, so it cannot search by meaning; search by label "
                           "text instead, or rebuild the pack.")
    qv = np.asarray(embed([q]), np.float32)[0]
    qv = qv / max(float(np.linalg.norm(qv)), 1e-12)
    scores = np.full(pack.n_features, -np.inf)
    if len(ids):
        if emb.shape[1] != qv.shape[0]:
            raise ExploreError(f"The pack's label embeddings have {emb.shape[1]} dimensions but the query encoder "
                               f"gives {qv.shape[0]}; they come from different encoders. Rebuild the pack.")
        keep = (ids >= 0) & (ids < pack.n_features)
        scores[ids[keep]] = emb[keep] @ qv
    if mine:
        fids = [f for f in mine if 0 <= f < pack.n_features]
        if fids:
            ue = np.asarray(embed([mine[f] for f in fids]), np.float32)
            ue = ue / np.maximum(np.linalg.norm(ue, axis=1, keepdims=True), 1e-12)
            scores[fids] = np.maximum(scores[fids], ue @ qv)
    valid = np.nonzero(np.isfinite(scores))[0]
    order = valid[np.lexsort((valid, -scores[valid]))][:k]
    hits = [_hit(pack, int(f), "semantic", float(scores[f])) for f in order]
    return with_user_labels(pack, hits, notes)


__all__ = ["MAX_QUERY_CHARS", "SORTS", "SearchHit", "arrange_hits", "match_rank", "search_id", "search_label", "semantic_search"]
