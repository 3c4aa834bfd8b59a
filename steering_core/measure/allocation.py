"""Adaptive allocation of rollouts: spend a larger budget only where a smaller one leaves the
answer open (docs/design.md §Adaptive budget).

A feature's top-10 list is what a researcher reads, and it is settled once every target near the
boundary between the 10th and 11th largest effect is clearly above or below it. Where many targets
sit within a couple of standard errors of that boundary, more rollouts can still swap them in or
out; where few do, they would not. Measured on the embedded pack (``bench.reference_budget
--adaptive``, 12 reference features): at 224 rollouts the features with more than 30 such
*contested* targets were exactly the ones that gained from 448, and topping up only those matched
the 448-rollout overlap with the reference at 75 % of the rollouts.

A top-up measures rollouts ``R … R2 − 1`` of each prompt with the same seeds a single ``R2``-rollout
measurement would use (:func:`steering_core.measure.effects.row_plan`), so the pooled effect equals
that measurement's effect; both are means of the same paired differences.

Pure tensor maths; the pack's ``topup`` stage and the budget benchmark call it."""

from __future__ import annotations

import torch

from steering_core.errors import SteeringError
from steering_core.measure.effects import EffectEstimate


def top_boundary(effect: torch.Tensor, top: int = 10) -> torch.Tensor:
    """Per row, the midpoint between the ``top``-th and ``top + 1``-th largest effect ``[n, 1]``:
    the line a target must cross to enter or leave the top-``top`` list."""
    if effect.shape[-1] <= top:
        raise SteeringError(f"A top-{top} boundary needs more than {top} targets; there are {effect.shape[-1]}.")
    v = effect.topk(top + 1, dim=-1).values
    return (v[..., top - 1:top] + v[..., top:top + 1]) / 2


def contested_targets(effect: torch.Tensor, se: torch.Tensor, top: int = 10, z: float = 2.0) -> torch.Tensor:
    """Per row, how many targets lie within ``z`` standard errors of the top-``top`` boundary: the
    targets a larger budget could still move across it. ``[n]`` integers."""
    return ((effect - top_boundary(effect, top)).abs() < z * se).sum(-1)


def needs_topup(effect: torch.Tensor, se: torch.Tensor, over: int, top: int = 10, z: float = 2.0) -> torch.Tensor:
    """Boolean ``[n]``: rows whose top-``top`` list is contested by more than ``over`` targets."""
    return contested_targets(effect, se, top, z) > over


def topup_threshold(contested: torch.Tensor, over: int, share: float = 1.0) -> int:
    """The contested count a feature must exceed to be topped up: ``over``, raised until at most
    ``share`` of the features exceed it. A cap on the share makes a build's cost predictable (at
    most ``share`` of the features get the larger budget) and keeps the most contested ones; a
    threshold rather than a ranking keeps ties together, so the same rule decides for a vector
    measured later."""
    if not 0 < share <= 1:
        raise SteeringError(f"The top-up share must be in (0, 1], not {share!r}.")
    cap = int(share * contested.numel() + 1e-9)  # 0.29 × 100 is 28.999…: still 29
    c = int(over)
    counts = torch.bincount(contested.flatten().clamp(min=0).long())
    above = int((contested > c).sum())
    while above > cap:
        c += 1
        above -= int(counts[c]) if c < counts.numel() else 0
    return c


def pool(first: EffectEstimate, n_first: int, extra: EffectEstimate, n_extra: int) -> EffectEstimate:
    """Combine two measurements of the same vectors on disjoint rollouts (``n_first`` and
    ``n_extra`` rollouts per prompt): the rollout-weighted mean effect, which is the effect of one
    measurement on all the rollouts, and the standard error of that weighted mean of two independent
    estimates, ``√((n₁·se₁)² + (n₂·se₂)²) / (n₁ + n₂)``. (The SE is stratified by prompt *and* by
    pass: an unbiased estimate of the same variance as a single pass's, but not the same number; it
    moves further from it the fewer rollouts per prompt each pass has, and a pass with one rollout
    per prompt has no within-prompt spread at all, which is why a top-up adds at least two.)"""
    if n_first < 1 or n_extra < 1:
        raise SteeringError(f"Pooling needs rollouts on both sides, not {n_first} and {n_extra}.")
    n = n_first + n_extra
    w1, w2 = n_first / n, n_extra / n
    effect = w1 * first.effect.double() + w2 * extra.effect.double()
    se = ((w1 * first.se.double()).square() + (w2 * extra.se.double()).square()).sqrt()
    return EffectEstimate(effect.float(), se.float())
