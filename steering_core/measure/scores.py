"""Scores of steered rollouts, as pure functions: keyword hits, the coherence score (a per-token
likelihood ratio against unsteered text), behaviour × coherence, and a standard error on each by
the delta method, so a sweep's peak can be told from noise. :mod:`steering_core.measure.sweep`
produces the points; everything that ranks them (Sweep, Compare, the prompting baseline, the
report) goes through :func:`add_product`, the one definition."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def keyword_hits(texts: Sequence[str], keywords: Sequence[str]) -> np.ndarray:
    """1.0 for each text containing any keyword as a whole word (case-insensitive), else 0.0."""
    pats = [re.compile(r"(?<!\w)" + re.escape(k.lower()) + r"(?!\w)") for k in keywords]
    return np.array([float(any(p.search(t.lower()) for p in pats)) for t in texts])


def coherence_score(loglik: float, loglik_unsteered: float) -> float:
    """exp(Δ mean log-likelihood per token), capped at 1: 1 = as likely as unsteered text."""
    if not (math.isfinite(loglik) and math.isfinite(loglik_unsteered)):
        return float("nan")
    return float(min(1.0, math.exp(loglik - loglik_unsteered)))


def mean_and_se(x: np.ndarray) -> tuple[float, float]:
    """The mean and its standard error. One value has no spread to estimate an SE from: its SE is
    NaN (unknown), never 0, which would claim an exact measurement; every SE computed from it is
    unknown too (:func:`add_product`), and the pages say so."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se


def resample_counts(n: int, draws: int, seed: int = 0):
    """How often each of ``n`` rows appears in each of ``draws`` bootstrap resamples (with
    replacement), as a ``[draws, n]`` float64 tensor: a statistic that is a sum over rows is then a
    matrix product per draw, with no row recomputed."""
    import torch

    picks = torch.randint(0, n, (draws, n), generator=torch.Generator().manual_seed(seed))
    return torch.zeros(draws, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones(draws, n, dtype=torch.float64))


def format_se(se: float, digits: int = 2) -> str:
    """``± SE`` for a sentence, or what stands in for an unknown one."""
    return f"± {se:.{digits}f}" if math.isfinite(se) else "(no standard error)"


@dataclass
class AlphaPoint:
    alpha: float
    scores: dict[str, float]  # name → mean; name + "_se" → standard error
    samples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. why the judge's scores are missing

    def get(self, name: str) -> float:
        return float(self.scores.get(name, float("nan")))


def wilson_interval(hits: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion ``hits``/``n``. A held-out accuracy of 9 of 9
    pairs is not "1.00 ± 0": the binomial SE is zero there, the Wilson interval (0.70, 1.00) says
    how little nine pairs establish. ``hits`` may be fractional (ties count half)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement_note(points: Sequence[AlphaPoint], name: str = "keywords") -> str | None:
    """A sentence for rates of exactly 0 or 1: their ± is 0 because every rollout agreed, which
    reads as an exact figure; the Wilson bound says how far the rate could still be from it."""
    flat = [p for p in points if p.get(name) in (0.0, 1.0) and p.get(name + "_se") == 0.0 and p.samples]
    if not flat:
        return None
    n = min(len(p.samples) for p in flat)
    hi = wilson_interval(0, n)[1]
    return (f"A {name} rate of exactly 0 or 1 shows ± 0 only because every rollout agreed: with {n} rollouts, "
            f"a rate of 0 is still consistent with up to {hi:.2f}, and 1 with down to {1 - hi:.2f} (95 % Wilson).")


def finish(points: list[AlphaPoint], behaviour: str) -> list[AlphaPoint]:
    """Add the coherence score (relative to α = 0) and behaviour × coherence to every point."""
    zero = next((p for p in points if p.alpha == 0.0), None)
    base = zero.get("loglik") if zero is not None else float("nan")
    base_se = zero.get("loglik_se") if zero is not None else float("nan")
    for p in points:
        add_product(p, behaviour, base, 0.0 if p is zero else base_se)
    return points


def _se(p: AlphaPoint, name: str) -> float:
    return p.get(name + "_se")  # NaN where unknown: it makes every SE computed from it unknown


def add_product(p: AlphaPoint, behaviour: str, loglik_unsteered: float,
                loglik_unsteered_se: float = 0.0) -> AlphaPoint:
    """Set ``p``'s coherence score (relative to ``loglik_unsteered``) and behaviour × coherence, in place:
    the one definition every sweep point and every prompting entry goes through.

    Each gets a standard error by the delta method, so a peak can be told from noise: the coherence
    exp(L − L₀) has SE c·√(SE_L² + SE_L₀²) below its cap (0 at the cap, where it does not move), the
    behaviour its own SE (clipping to [0, 1] does not change it), and their product
    √((c·SE_b)² + (b·SE_c)²), treating the two as independent. Pass ``loglik_unsteered_se = 0``
    for the point that is itself the reference (its coherence is 1 exactly). An unknown SE (NaN:
    one rollout) among the inputs leaves the SEs that depend on it unknown."""
    coh = coherence_score(p.get("loglik"), loglik_unsteered)
    p.scores["coherence"] = coh
    d_se = math.hypot(_se(p, "loglik"), loglik_unsteered_se)
    coh_se = coh * d_se if math.isfinite(coh) and coh < 1.0 else (0.0 if math.isfinite(coh) else float("nan"))
    p.scores["coherence_se"] = coh_se
    b = p.get(behaviour)
    b = max(0.0, min(1.0, b)) if math.isfinite(b) and behaviour != "target" else b
    judged = behaviour == "judge"
    c = p.get("judge_coherence") if judged else coh  # the paper's B×C: both from the judge
    c_se = _se(p, "judge_coherence") if judged else coh_se
    ok = math.isfinite(b) and math.isfinite(c)
    p.scores["product"] = b * c if ok else float("nan")
    p.scores["product_se"] = math.hypot(c * _se(p, behaviour), b * c_se) if ok else float("nan")
    return p


__all__ = ["AlphaPoint", "add_product", "agreement_note", "coherence_score", "finish", "format_se", "keyword_hits", "mean_and_se"]
