"""The generic response: what steering in *any* direction does, and the effects left once it is removed.

Pushing the residual stream by a loss-matched amount degrades text in much the same way whatever
the direction, and some features answer to that degradation, not to the direction (measured on the
embedded pack: different features' top-10 effect lists shared 2.9 of 10 targets on average, one
target was in all of them). Measuring random unit directions with the same budget and at their own
loss-matched α estimates that shared part; the **specific effect** subtracts it, and **hub**
targets are those that random directions move often (docs/design.md §Generic response).

Everything here is pure tensor maths; the pack's ``control`` stage and the reference measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GenericResponse:
    """Per target feature: the mean effect of random directions, its standard error, and the share
    of random directions that have the target among their ``top`` largest raised effects."""

    mean: torch.Tensor  # [d_sae]
    se: torch.Tensor  # [d_sae]
    hub_share: torch.Tensor  # [d_sae], in [0, 1]
    n_directions: int
    top: int

    def hubs(self, threshold: float) -> torch.Tensor:
        """Boolean ``[d_sae]``: targets raised by at least ``threshold`` of random directions."""
        return self.hub_share >= threshold


def generic_response(effects: torch.Tensor, top: int = 10) -> GenericResponse:
    """From the effects ``[n_random, d_sae]`` of random directions. The SE is the spread across
    directions over √n, which includes each direction's own sampling noise."""
    e = effects.double()
    n = e.shape[0]
    mean = e.mean(0)
    se = e.std(0, unbiased=True) / n ** 0.5 if n > 1 else torch.full_like(mean, float("nan"))
    k = min(top, e.shape[1])
    idx = e.topk(k, dim=-1).indices
    share = torch.zeros(e.shape[1], dtype=torch.float64).index_add_(
        0, idx.reshape(-1), torch.ones(idx.numel(), dtype=torch.float64)) / n
    return GenericResponse(mean.float(), se.float(), share.float(), n, k)


def specific_effect(effect: torch.Tensor, se: torch.Tensor, generic: GenericResponse) -> tuple[torch.Tensor, torch.Tensor]:
    """Effect − generic response, and its SE (independent errors add in quadrature)."""
    return effect - generic.mean, (se.square() + generic.se.square()).sqrt()


def top_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> list[int]:
    """Row-wise size of the intersection of the ``k`` largest entries of ``a`` and of ``b``: how
    many of one measurement's top-``k`` raised targets another measurement finds."""
    ta = a.topk(min(k, a.shape[-1]), dim=-1).indices.tolist()
    tb = b.topk(min(k, b.shape[-1]), dim=-1).indices.tolist()
    return [len(set(x) & set(y)) for x, y in zip(ta, tb)]


def self_in_top(effects: torch.Tensor, ids: list[int], k: int = 10) -> float:
    """Share of features that rank themselves among the ``k`` targets they raise most."""
    if not ids:
        return 0.0
    top = effects.topk(min(k, effects.shape[-1]), dim=-1).indices
    return float(sum(f in set(top[r].tolist()) for r, f in enumerate(ids)) / len(ids))


def within_noise(effect: torch.Tensor, se: torch.Tensor, z: float = 2.0) -> torch.Tensor:
    """Effects indistinguishable from zero at ``z`` standard errors (greyed or hidden in lists)."""
    return effect.abs() < z * se
