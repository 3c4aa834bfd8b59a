"""Massive activations: tokens whose residual norm is orders of magnitude above the rest.

Many models park huge activations on a few tokens that act as attention sinks: the first token,
and in some models the first full stop or line break, or (SmolLM2) the first tokens of a window
cut from running text, with residual norms of about 25,000 after block 15 where an ordinary
token's is 170. Any figure averaged over tokens (a typical residual norm, an SAE's explained
variance) is then decided by those few, so the project leaves them out by one rule: a token is
massive when its norm exceeds ``MASSIVE_FACTOR`` times the median of its set."""

from __future__ import annotations

import math

import torch

#: A token whose residual norm exceeds this many times the median is a massive activation; on the
#: embedded model they sit near 150× the median and ordinary tokens below 2×.
MASSIVE_FACTOR = 10.0


def massive_threshold(norms: torch.Tensor, factor: float = MASSIVE_FACTOR) -> float:
    """The residual norm above which a token counts as a massive activation: ``factor`` times the
    median, so it follows the model's own scale."""
    if norms.numel() == 0:
        return math.inf
    return float(factor * norms.float().median())


__all__ = ["MASSIVE_FACTOR", "massive_threshold"]
