"""Loss-matched steering strength: the α at which steering raises next-token loss on neutral
reference text by a target amount (SAE-TS uses +0.5 nats). Document 004 shows
ΔCE(α) ≈ g·α + ½·c·α² near 0, so two probes fit the curve, one solve gives α, and one more
evaluation verifies it; no grid search. Works for many vectors at once (one per batch row)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from steering_core.errors import SteeringError
from steering_core.model.steering import steer, steering

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


def per_row_loss(model: SteerableModel, ids: torch.Tensor, steer_set=None) -> torch.Tensor:
    """Mean next-token cross-entropy per row (nats), positions 1.. of equal-length rows."""
    with torch.no_grad(), steer(model, steer_set):
        logits = model.backend.forward(ids, torch.ones_like(ids)).float()
    lp = torch.log_softmax(logits[:, :-1], -1)
    return -lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).mean(-1)


def delta_ce(model: SteerableModel, ref_ids: torch.Tensor, layer: int, vectors: torch.Tensor, alphas: torch.Tensor,
             base: torch.Tensor | None = None) -> torch.Tensor:
    """ΔCE for each (vector, α) pair: every vector steers its own copy of the reference rows."""
    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    f, r = vectors.shape[0], ref_ids.shape[0]
    if base is None:
        base = per_row_loss(model, ref_ids).mean()
    ids = ref_ids.repeat(f, 1)
    st = steering(model, (layer, vectors.repeat_interleave(r, 0), alphas.repeat_interleave(r, 0)))
    return per_row_loss(model, ids, st).view(f, r).mean(-1) - base


def fit_quadratic(alphas: torch.Tensor, dces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (g, c) of ΔCE = g·α + ½·c·α² through the origin, per row.

    ``alphas`` and ``dces`` are ``[F, n]`` (n ≥ 2 probes per vector)."""
    a = alphas.double()
    x = torch.stack([a, 0.5 * a * a], -1)  # [F, n, 2]
    y = dces.double().unsqueeze(-1)
    sol = torch.linalg.lstsq(x, y).solution.squeeze(-1)  # [F, 2]
    return sol[:, 0], sol[:, 1]


def solve_alpha(g: torch.Tensor, c: torch.Tensor, target: float, fallback: torch.Tensor) -> torch.Tensor:
    """Positive root of ½c·α² + g·α = target; where the fit has no usable root, ``fallback``."""
    g, c = g.double(), c.double()
    disc = g * g + 2 * c * target
    root = torch.where(c.abs() > 1e-12, (-g + torch.sqrt(disc.clamp(min=0))) / c.where(c.abs() > 1e-12, torch.ones_like(c)),
                       target / g.where(g.abs() > 1e-12, torch.ones_like(g)))
    ok = torch.isfinite(root) & (root > 0) & (disc >= 0) & ((c.abs() > 1e-12) | (g.abs() > 1e-12))
    return torch.where(ok, root, fallback.double()).float()


@dataclass
class AlphaResult:
    alpha: torch.Tensor  # [F] loss-matched α
    dce: torch.Tensor  # [F] ΔCE measured at that α (the verification)
    curvature: torch.Tensor  # [F] fitted c
    slope: torch.Tensor  # [F] fitted g
    evals_per_vector: int


#: Bracketing steps the Steer page, vector measurements and new pack builds give a row whose two
#: solves missed (``loss_matched_alpha(refine=…)``; packs record theirs in ``[alpha] refine``).
DEFAULT_REFINE = 4


def _refine(evaluate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tried_a: torch.Tensor,
            tried_d: torch.Tensor, best_a: torch.Tensor, best_d: torch.Tensor, target: float, tolerance: float,
            steps: int, max_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bracket and bisect (in log α) the rows whose solves missed: the largest tried α below the
    target and the smallest above it bound the answer, since ΔCE rises with |α| on the positive
    side; each step evaluates the bracket's geometric middle (or halves / doubles the α when
    only one side is known) and keeps the closest point found. Evaluates only the rows still
    missing; ``evaluate(rows, alphas)`` measures ΔCE of those rows (positions in ``best_a``)."""
    a, d = tried_a.double(), tried_d.double()
    pos = a > 0
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    lo = torch.where(pos & (d < target), a, torch.zeros_like(a)).max(1).values
    hi = torch.where(pos & (d > target), a, inf).min(1).values
    best_a, best_d = best_a.clone(), best_d.clone()
    for _ in range(steps):
        rows = ((best_d - target).abs() > tolerance * target).nonzero().squeeze(-1)
        if rows.numel() == 0:
            break
        l, h = lo[rows], hi[rows]
        nxt = torch.where(torch.isinf(h), (2 * l).clamp(max=max_alpha),
                          torch.where(l > 0, torch.sqrt(l * h.clamp(max=1e30)), h / 2))
        d_new = evaluate(rows, nxt.float()).double()
        below = d_new < target
        lo[rows] = torch.where(below, nxt, l)
        hi[rows] = torch.where(below, h, nxt)
        closer = (d_new - target).abs() < (best_d[rows].double() - target).abs()
        best_a[rows] = torch.where(closer, nxt.float(), best_a[rows])
        best_d[rows] = torch.where(closer, d_new.float(), best_d[rows])
    return best_a, best_d


def loss_matched_alpha(model: SteerableModel, ref_ids: torch.Tensor, layer: int, vectors: torch.Tensor,
                       target: float = 0.5, probe: float | None = None, tolerance: float = 0.2,
                       max_alpha: float | None = None,
                       symmetric: bool = True, on_eval: Callable[[int], None] | None = None,
                       refine: int = 0) -> AlphaResult:
    """α per (unit) vector such that ΔCE on ``ref_ids`` ≈ ``target`` nats.

    Probes at ±``probe`` (default: a quarter of the residual norm at ``layer``), solves the fitted
    quadratic, verifies; rows whose verified ΔCE misses by more than ``tolerance``·target get one
    refit through all probes and a second verification. ``symmetric=False`` probes only +probe and
    assumes no linear term for the first solve (2 evaluations per vector when the check passes,
    which is what a pack of thousands of features can afford). Rows that still miss then get up to
    ``refine`` bracketing steps (:func:`_refine`): where ΔCE is far from quadratic near the probe,
    the two solves can land at 7.5 nats instead of 0.5 (about 4 % of the embedded pack's features,
    built with ``refine=0``). ``on_eval(k)`` is called after the k-th loss evaluation (the
    unsteered one included, at most 5 + ``refine``), so a caller can show progress and cancel by
    raising from it.
    """
    try:
        target_f = float(target)
    except (TypeError, ValueError):
        target_f = float("nan")
    if isinstance(target, (bool, str, bytes)) or not (math.isfinite(target_f) and target_f > 0):
        raise SteeringError(f"The ΔCE target must be a positive number of nats, got {target!r}.")
    target = target_f
    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    f = vectors.shape[0]
    if probe is None:
        probe = 0.25 * model.residual_norms()[layer]
    if max_alpha is None:
        max_alpha = 16 * probe
    done = [0]

    def evaluated(x):
        done[0] += 1
        if on_eval is not None:
            on_eval(done[0])
        return x

    base = evaluated(per_row_loss(model, ref_ids).mean())
    p = torch.full((f,), float(probe))
    d_pos = evaluated(delta_ce(model, ref_ids, layer, vectors, p, base))
    if symmetric:
        d_neg = evaluated(delta_ce(model, ref_ids, layer, vectors, -p, base))
        alphas = torch.stack([p, -p], 1)
        dces = torch.stack([d_pos, d_neg], 1)
        g, c = fit_quadratic(alphas, dces)
    else:
        alphas, dces = p[:, None], d_pos[:, None]
        g, c = torch.zeros(f, dtype=torch.float64), (2 * d_pos / (p * p)).double()
    # fallback: ΔCE grows at least quadratically from the +probe point
    fallback = p * torch.sqrt((target / d_pos.clamp(min=1e-6)).clamp(max=1e4))
    a1 = solve_alpha(g, c, target, fallback).clamp(min=probe / 64, max=max_alpha)
    d1 = evaluated(delta_ce(model, ref_ids, layer, vectors, a1, base))
    miss = (d1 - target).abs() > tolerance * target
    if bool(miss.any()):
        a1_first, d1_first = a1, d1
        idx = miss.nonzero().squeeze(-1)
        g2, c2 = fit_quadratic(torch.cat([alphas[idx], a1[idx, None]], 1), torch.cat([dces[idx], d1[idx, None]], 1))
        # near the solution, the local secant through (a1, d1) is the better fallback
        fb = a1[idx] * torch.sqrt((target / d1[idx].clamp(min=1e-6)).clamp(max=1e4))
        a2 = solve_alpha(g2, c2, target, fb).clamp(min=probe / 64, max=max_alpha)
        d2 = evaluated(delta_ce(model, ref_ids, layer, vectors[idx], a2, base))
        better = (d2 - target).abs() < (d1[idx] - target).abs()
        a1 = a1.clone()
        d1 = d1.clone()
        a1[idx] = torch.where(better, a2, a1[idx])
        d1[idx] = torch.where(better, d2, d1[idx])
        g, c = g.clone(), c.clone()
        g[idx], c[idx] = g2, c2
        if refine > 0:
            tried_a = torch.cat([alphas[idx], a1_first[idx, None], a2[:, None]], 1)
            tried_d = torch.cat([dces[idx], d1_first[idx, None], d2[:, None]], 1)
            a1[idx], d1[idx] = _refine(lambda rows, a: evaluated(delta_ce(model, ref_ids, layer, vectors[idx[rows]], a,
                                                                          base)),
                                       tried_a, tried_d, a1[idx], d1[idx], target, tolerance, refine, max_alpha)
    return AlphaResult(alpha=a1, dce=d1, curvature=c.float(), slope=g.float(), evals_per_vector=done[0] - 1)  # the unsteered loss is shared


def reference_ids(model: SteerableModel, window: int = 32, windows: int = 4) -> torch.Tensor:
    """Equal-length rows of neutral reference text (``models.REFERENCE_TEXTS`` run together) for
    ΔCE when no pack corpus is at hand: ``[windows, window]`` token ids (fewer rows if the text
    runs out)."""
    from steering_core.model.steerable import REFERENCE_TEXTS

    ids, mask = model.tokenize([" ".join(t.strip() for t in REFERENCE_TEXTS)])
    stream = ids[0][mask[0].bool()]
    n = max(1, min(windows, stream.numel() // window))
    if stream.numel() < window:
        raise SteeringError(f"The reference text has only {stream.numel()} tokens; a window of {window} is too long.")
    return stream[: n * window].view(n, window).to(model.device)


def auto_alpha(model: SteerableModel, layer: int, vector, target: float = 0.5,
               ref_ids: torch.Tensor | None = None) -> AlphaResult:
    """The α at which steering along ``vector`` (unit-normalised) raises next-token loss on
    neutral reference text by ``target`` nats: the symmetric probe, a quadratic solve, one
    verifying evaluation (a refit when it misses by more than 20 %). What the Steer and Sweep
    pages offer as "automatic α" and what the pack uses per feature."""
    v = torch.as_tensor(vector, dtype=torch.float32).reshape(-1)
    n = float(v.norm())
    if not math.isfinite(n) or n == 0.0:
        raise SteeringError("Automatic α needs a non-zero, finite vector.")
    ref = ref_ids if ref_ids is not None else reference_ids(model)
    return loss_matched_alpha(model, ref, layer, (v / n)[None], target=target, symmetric=True,
                              refine=DEFAULT_REFINE)
