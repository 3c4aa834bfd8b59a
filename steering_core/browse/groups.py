"""Neighbourhoods and groups: how far "points the same way" and "does the same thing" agree.

Two comparisons of a feature's cosine-similar and effect-similar features: their top-k lists
side by side with the Jaccard index of the two (:func:`neighbourhoods`), and two groups grown
from the feature by the procedure of [Chalnev 2024] Appendix E, done automatically
(:func:`grow_group`, :func:`compare_groups`; docs/design.md §Feature effects). The growing
itself is the pure function :func:`grow_from`, so it is tested without a pack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from steering_core.browse.lists import LIST_KINDS, cosine_list, effect_similar_list
from steering_core.browse.rows import ExploreError, ListFilter, ListRow, check_filter, check_k, feature_table
from steering_core.pack.reader import FeaturePack

if TYPE_CHECKING:  # pragma: no cover
    from steering_core.browse.usernotes import UserNotes

#: The similarities a group can grow by; each is also the name of its list kind in
#: :data:`steering_core.browse.lists.LIST_KINDS`.
GROUP_KINDS = ("effect_similar", "cosine")


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B| (0.0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 0.0


def chance_shared(k: int, n: int, k2: int | None = None) -> float:
    """How many features a list of ``k`` and one of ``k2`` (default ``k``) drawn at random from ``n``
    share on average (k·k2/n): the yardstick for an overlap, since "2 in both" means little until
    one knows chance gives 0.08."""
    k2 = k if k2 is None else k2
    return k * k2 / n if n > 0 else float("nan")


@dataclass(frozen=True)
class Labelled:
    """A feature id with the label to show for it."""

    feature_id: int
    label: str


@dataclass(frozen=True)
class Neighbourhoods:
    """A feature's cosine-similar and effect-similar neighbours and how much they overlap."""

    feature_id: int
    cosine: list[ListRow]
    effect_similar: list[ListRow]
    both: list[Labelled]
    cosine_only: list[Labelled]
    effect_only: list[Labelled]
    jaccard: float


def _split(a: Sequence[int], b: Sequence[int], label: Callable[[int], str]):
    sb, sa = set(b), set(a)
    both = [Labelled(f, label(f)) for f in a if f in sb]
    return both, [Labelled(f, label(f)) for f in a if f not in sb], [Labelled(f, label(f)) for f in b if f not in sa]


def _labeller(pack: FeaturePack, notes: "UserNotes | None", ids: Iterable[int]) -> Callable[[int], str]:
    ft = feature_table(pack)
    mine = notes.labels(pack, sorted(set(ids))) if notes is not None else {}
    return lambda f: mine.get(f) or ft.label_of(f)


def neighbourhoods(pack: FeaturePack, feature_id, k: int = 16, flt: ListFilter | None = None,
                   notes: "UserNotes | None" = None) -> Neighbourhoods:
    """The top-``k`` cosine-similar and effect-similar features, their intersection and Jaccard
    index: how far "points the same way" and "does the same thing" agree for this feature."""
    fid = pack.check_feature(feature_id)
    cos = cosine_list(pack, fid, flt, k, notes)
    eff = effect_similar_list(pack, fid, flt, k, notes)
    a, b = [r.feature_id for r in cos], [r.feature_id for r in eff]
    both, cos_only, eff_only = _split(a, b, _labeller(pack, notes, a + b))
    return Neighbourhoods(fid, cos, eff, both, cos_only, eff_only, jaccard(a, b))


@dataclass(frozen=True)
class GroupMember:
    """A member of a grown group: when it joined (step 0 is the seed), which earlier member it is
    most similar to (``via``), and its summed similarity to the members that listed it."""

    feature_id: int
    label: str
    step: int
    via: int | None
    score: float


def grow_from(seed: int, neighbours: Callable[[int], Sequence[tuple[int, float]]], size: int,
              per_step: int) -> list[tuple[int, int, int | None, float]]:
    """Appendix E's procedure as a pure function. Start from ``seed``; at each step every current
    member offers its positively similar neighbours, a candidate scores the sum of its
    similarities to the members that list it (so features close to many members win, which keeps
    the group on one theme rather than drifting down a chain), and the ``per_step`` best
    candidates join (ties: larger single similarity, then lower id). Stops at ``size`` members
    or when no candidate is left. Returns ``(feature, step, via, score)`` in joining order."""
    members: list[tuple[int, int, int | None, float]] = [(seed, 0, None, 0.0)]
    inside = {seed}
    cache: dict[int, Sequence[tuple[int, float]]] = {}
    step = 0
    while len(members) < size:
        step += 1
        score: dict[int, float] = {}
        best: dict[int, tuple[float, int]] = {}  # candidate -> (largest similarity, member offering it)
        for m, *_ in members:
            if m not in cache:
                cache[m] = neighbours(m)
            for c, v in cache[m]:
                if c in inside or not v > 0:
                    continue
                score[c] = score.get(c, 0.0) + float(v)
                if c not in best or v > best[c][0]:
                    best[c] = (float(v), m)
        if not score:
            break
        ranked = sorted(score, key=lambda c: (-score[c], -best[c][0], c))
        for c in ranked[: min(per_step, size - len(members))]:
            members.append((c, step, best[c][1], score[c]))
            inside.add(c)
    return members


def grow_group(pack: FeaturePack, feature_id, kind: str, size: int = 12, per_step: int = 2, fanout: int = 8,
               flt: ListFilter | None = None, notes: "UserNotes | None" = None) -> list[GroupMember]:
    """Grow a group of related features from one feature by repeatedly adding the features most
    similar to the current members, by ``kind``: ``effect_similar`` (what the SAE-TS authors
    found thematically tighter) or ``cosine`` (decoder directions). Each member's top ``fanout``
    neighbours (after ``flt``, e.g. hiding dense features) are its candidates."""
    fid = pack.check_feature(feature_id)
    if kind not in GROUP_KINDS:
        raise ExploreError(f"Groups grow by {' or '.join(GROUP_KINDS)}, not {kind!r}.")
    size, per_step, fanout = check_k(size, "Group size"), check_k(per_step, "Features per step"), \
        check_k(fanout, "Neighbours per member")
    flt = check_filter(flt)
    listing = LIST_KINDS[kind].fetch

    def neighbours(m: int) -> list[tuple[int, float]]:
        return [(r.feature_id, r.value) for r in listing(pack, m, flt, fanout)]

    grown = grow_from(fid, neighbours, size, per_step)
    label = _labeller(pack, notes, [g[0] for g in grown])
    return [GroupMember(f, label(f), s, via, sc) for f, s, via, sc in grown]


@dataclass(frozen=True)
class GroupComparison:
    """Appendix E's table: the group grown by effect similarity, the one grown by decoder cosine,
    and which members they share."""

    feature_id: int
    effect_group: list[GroupMember]
    cosine_group: list[GroupMember]
    both: list[Labelled]
    effect_only: list[Labelled]
    cosine_only: list[Labelled]
    jaccard: float


def compare_groups(pack: FeaturePack, feature_id, size: int = 12, per_step: int = 2, fanout: int = 8,
                   flt: ListFilter | None = None, notes: "UserNotes | None" = None) -> GroupComparison:
    """Grow both groups from the same feature and compare them (the seed is in both)."""
    fid = pack.check_feature(feature_id)
    eff = grow_group(pack, fid, "effect_similar", size, per_step, fanout, flt, notes)
    cos = grow_group(pack, fid, "cosine", size, per_step, fanout, flt, notes)
    a, b = [m.feature_id for m in eff], [m.feature_id for m in cos]
    both, eff_only, cos_only = _split(a, b, _labeller(pack, notes, a + b))
    return GroupComparison(fid, eff, cos, both, eff_only, cos_only, jaccard(a, b))


__all__ = [
    "GROUP_KINDS", "GroupComparison", "GroupMember", "Labelled", "Neighbourhoods", "compare_groups", "grow_from",
    "grow_group", "jaccard", "neighbourhoods",
]
