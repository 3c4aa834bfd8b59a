"""The next-token view of steering strength ([Garreau 2026]; docs/design.md §Steering strength):
how each token's probability and the loss on reference text move as α grows, for one prompt.

Theory to compare against: Δp(z | α) is monotone for the tokens the vector most promotes or
suppresses and bump-shaped for most others; ΔCE(α) ≈ g·α + ½·c·α² near 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringCoreError
from steering_core.names import unencodable_at

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


class NextTokenError(SteeringCoreError):
    """A next-token request that cannot be computed as given."""


@dataclass
class NextTokenCurves:
    alphas: np.ndarray  # [A]
    token_ids: list[int]
    tokens: list[str]
    chosen: list[bool]  # True for tokens the user asked for, False for the top movers
    p0: np.ndarray  # [T] probability at α = 0
    delta_p: np.ndarray  # [A, T] p(z | α) − p(z | 0)
    notes: list[str] = field(default_factory=list)  # how typed strings became tokens, where not one to one


def _alphas(alphas: Sequence[float]) -> torch.Tensor:
    a = torch.tensor([float(x) for x in alphas], dtype=torch.float32)
    if a.numel() == 0 or not torch.isfinite(a).all():
        raise NextTokenError("Give a non-empty grid of finite α values.")
    return a


def next_token_curves(model: SteerableModel, prompt: str, vector, layer: int, alphas: Sequence[float],
                      tokens: Sequence[str] = (), top_movers: int = 8, chat: bool = True) -> NextTokenCurves:
    """Δp of the next token at every α (one batch: one row per α), for the chosen tokens (first
    token of each string) and the ``top_movers`` tokens whose probability moves most."""
    from steering_core.model.steering import make_term, steer, steering

    if not isinstance(prompt, str) or not prompt.strip():
        raise NextTokenError("The prompt is empty.")
    a = _alphas(alphas)
    if 0.0 not in a.tolist():
        a = torch.cat([a, torch.zeros(1)]).sort().values
    text = model.format_prompt(prompt, chat=chat) if chat and model.chat_template else prompt
    ids, mask = model.tokenize([text] * a.numel())
    v = torch.as_tensor(vector, dtype=torch.float32)
    st = steering(model, make_term(model, layer, v, a))
    with torch.no_grad(), steer(model, st):
        logits = model.backend.forward(ids, mask)[:, -1].float()
    p = torch.softmax(logits, -1)
    zero = int((a == 0).nonzero()[0])
    dp = p - p[zero : zero + 1]
    chosen_ids, notes = chosen_tokens(model, tokens)
    movers = dp.abs().max(0).values.argsort(descending=True).tolist()
    extra = [i for i in movers if i not in chosen_ids][: max(0, int(top_movers))]
    all_ids = chosen_ids + extra
    return NextTokenCurves(a.numpy(), all_ids, [model.tokenizer.decode([i]) for i in all_ids],
                           [True] * len(chosen_ids) + [False] * len(extra), p[zero, all_ids].numpy(),
                           dp[:, all_ids].numpy(), notes)


def chosen_tokens(model: SteerableModel, tokens: Sequence[str]) -> tuple[list[int], list[str]]:
    """The token ids of the strings a person typed to follow, and sentences on where a string is
    not one token. Only a string's first token is the *next* token, so a word the tokenizer splits
    is followed by its first piece, and the person is told which; entries of spaces alone (left by
    a stray comma) are skipped rather than followed as a space token nobody asked for."""
    ids: list[int] = []
    notes: list[str] = []
    for t in tokens:
        if not isinstance(t, str) or not t.strip():
            continue
        if unencodable_at(t) is not None:
            raise NextTokenError(f"The token {t!r} contains a character that cannot be encoded (an unpaired "
                                 "surrogate); remove it.")
        tid = [int(i) for i in model.tokenizer(t, add_special_tokens=False)["input_ids"]]
        if not tid:
            notes.append(f"{t!r} is no token at all; it is left out.")
            continue
        if len(tid) > 1:
            first = model.tokenizer.decode(tid[:1])
            notes.append(f"{t!r} is {len(tid)} tokens; its curve follows the first, {first!r}.")
        if tid[0] in ids:
            notes.append(f"{t!r} starts with the same token as an earlier entry; it is drawn once.")
        else:
            ids.append(tid[0])
    return ids, notes


@dataclass
class DceCurve:
    alphas: np.ndarray
    dce: np.ndarray
    slope: float  # fitted g
    curvature: float  # fitted c
    fit_range: float  # |α| used for the fit


def dce_curve(model: SteerableModel, layer: int, vector, alphas: Sequence[float], ref_ids=None,
              fit_fraction: float = 0.25) -> DceCurve:
    """ΔCE on reference text over the grid, and the quadratic fitted on the smallest |α| (the
    ``fit_fraction`` of the grid's range, at least the two smallest non-zero points)."""
    from steering_core.measure.alpha import delta_ce, fit_quadratic, reference_ids

    a = _alphas(alphas)
    ref = ref_ids if ref_ids is not None else reference_ids(model)
    v = torch.as_tensor(vector, dtype=torch.float32)
    d = delta_ce(model, ref, layer, v[None].expand(a.numel(), -1), a)
    rng = float(a.abs().max()) * fit_fraction
    nz = a != 0
    near = nz & (a.abs() <= rng)
    if int(near.sum()) < 2:
        order = a.abs().masked_fill(~nz, float("inf")).argsort()[:2]
        near = torch.zeros_like(nz)
        near[order] = True
        near &= nz
        rng = float(a[near].abs().max()) if bool(near.any()) else 0.0
    if int(near.sum()) < 2:
        raise NextTokenError("The quadratic fit needs at least two non-zero α values.")
    g, c = fit_quadratic(a[near][None], d[near][None])
    return DceCurve(a.numpy(), d.numpy(), float(g[0]), float(c[0]), rng)
