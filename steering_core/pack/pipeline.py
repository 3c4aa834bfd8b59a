"""The whole pack pipeline, in declaration order: the statistics stages
(:mod:`steering_core.pack.stages`), the effect stages (:mod:`~steering_core.pack.effect_stages`,
:mod:`~steering_core.pack.topup`, :mod:`~steering_core.pack.check_stages`,
:mod:`~steering_core.pack.derived_stages`; each module imports the one before it, so the order is
the same whichever is imported first), the describing stages
(:mod:`steering_core.pack.describe_stages`), then shipping. ``Builder`` runs ``PIPELINE.order()``; importing this module is what registers them all."""

from __future__ import annotations

from typing import TYPE_CHECKING

import steering_core.pack.describe_stages  # noqa: F401  (registers every stage but ship, in order)
from steering_core.pack.config import resolve_path
from steering_core.pack.stages import PIPELINE, ship_pack, stage

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder

__all__ = ["PIPELINE"]


@stage("ship", needs=("sae_eval", "sinks", "neighbors", "approximator", "maps", "stability", "reference", "labels"))
def ship(b: Builder) -> None:
    if not b.cfg.ship_to:
        b.finish("ship", {"shipped": False})
        return
    target = resolve_path(b.cfg.ship_to)
    ship_pack(b.con, b.dir, target)
    b.finish("ship", {"to": str(target)})
