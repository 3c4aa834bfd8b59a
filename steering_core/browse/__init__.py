"""The feature browser's library side: what the Features page asks of a feature pack.

* :mod:`~steering_core.browse.rows`: the row type, filters and per-pack feature table every list shares;
* :mod:`~steering_core.browse.lists`: the four ranked lists of a feature card (effects, actions,
  cosine-similar, effect-similar) and :data:`LIST_KINDS`, their registry;
* :mod:`~steering_core.browse.search`: find a feature by id, label text or label meaning;
* :mod:`~steering_core.browse.firing`: "what fires here" on a typed text;
* :mod:`~steering_core.browse.groups`: cosine vs effect-similar neighbourhoods, and grown groups;
* :mod:`~steering_core.browse.export`: any list as CSV or JSON;
* :mod:`~steering_core.browse.suggest`: a feature's words as a sweep's keywords and concept;
* :mod:`~steering_core.browse.usernotes`: the user's own labels, notes and workspaces (kept
  outside the read-only pack).

The public names below are re-exported so callers can write ``from steering_core.browse import
effects_list``; the helpers other lists build on (``check_k``, ``feature_table`` …) stay in
:mod:`~steering_core.browse.rows`. The pack is read through :class:`~steering_core.pack.reader.FeaturePack`.
"""

from steering_core.browse.export import rows_to_csv, rows_to_json
from steering_core.browse.firing import (
    FeatureReading,
    Firing,
    TokenFeatures,
    feature_on_text,
    top_per_token,
    what_fires_here,
)
from steering_core.browse.groups import (
    GROUP_KINDS,
    GroupComparison,
    GroupMember,
    Labelled,
    Neighbourhoods,
    chance_shared,
    compare_groups,
    grow_from,
    grow_group,
    jaccard,
    neighbourhoods,
)
from steering_core.browse.lists import (
    LIST_KINDS,
    ListKind,
    actions_list,
    cosine_list,
    effect_similar_list,
    effects_list,
    predicted_effects,
    rank_cosine,
    rank_predicted,
)
from steering_core.browse.rows import (
    BASES,
    DEFAULT_MAX_DENSITY,
    MAX_K,
    REL_EPS,
    SIGNS,
    Baseline,
    ExploreError,
    ListFilter,
    ListRow,
    baseline_activation,
    filter_rows,
    sink_note,
)
from steering_core.browse.search import (
    SORTS,
    SearchHit,
    arrange_hits,
    match_rank,
    search_id,
    search_label,
    semantic_search,
)

__all__ = [
    "BASES", "Baseline", "DEFAULT_MAX_DENSITY", "ExploreError", "FeatureReading", "Firing", "SORTS", "arrange_hits",
    "baseline_activation", "chance_shared", "sink_note",
    "feature_on_text", "GROUP_KINDS", "GroupComparison", "GroupMember",
    "LIST_KINDS", "Labelled", "ListFilter", "ListKind", "ListRow", "MAX_K", "Neighbourhoods", "REL_EPS", "SIGNS",
    "SearchHit", "TokenFeatures", "actions_list", "compare_groups", "cosine_list",
    "effect_similar_list", "effects_list", "filter_rows", "grow_from", "grow_group", "jaccard",
    "match_rank", "neighbourhoods", "predicted_effects", "rank_cosine", "rank_predicted", "rows_to_csv",
    "rows_to_json", "search_id", "search_label", "semantic_search", "top_per_token", "what_fires_here",
    ]
