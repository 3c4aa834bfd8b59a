"""The registry of list kinds that the Features page draws its card from (steering_core.browse.lists)."""

from __future__ import annotations

from steering_core.browse import (
    GROUP_KINDS,
    LIST_KINDS,
    actions_list,
    cosine_list,
    effect_similar_list,
    effects_list,
)


def test_the_registry_names_the_four_lists_in_card_order():
    assert list(LIST_KINDS) == ["effects", "actions", "cosine", "effect_similar"]
    assert [k.fetch for k in LIST_KINDS.values()] == [effects_list, actions_list, cosine_list, effect_similar_list]
    for name, kind in LIST_KINDS.items():
        assert kind.name == name and kind.title.strip() and kind.about.strip()
    assert len({k.title for k in LIST_KINDS.values()}) == len(LIST_KINDS)


def test_every_group_kind_is_a_list_kind():
    assert set(GROUP_KINDS) <= set(LIST_KINDS)
