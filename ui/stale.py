"""Saying when a shown result no longer matches the widgets: a result remembers the settings that
made it, and the page compares them with what the widgets read now. No maths: a comparison of two
dictionaries of what the user typed."""

from __future__ import annotations

from typing import Any, Mapping


def changes(made_with: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The names of the settings that differ (in ``now``'s order), e.g. ``["keywords", "α grid"]``."""
    return [name for name, value in now.items() if made_with.get(name) != value]


def stale_warning(made_with: Mapping[str, Any] | None, now: Mapping[str, Any], action: str) -> str | None:
    """A sentence when a result was made with other settings than the widgets read now, else None."""
    if made_with is None:
        return None
    changed = changes(made_with, now)
    if not changed:
        return None
    return (f"This result was made with other settings ({', '.join(changed)} changed since); {action} to apply "
            "them. What is shown below is the old result.")
