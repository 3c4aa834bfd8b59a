"""How well a direction separates held-out pairs: the numbers behind the layer sweep and the
data-efficiency plot ([Purchase 2025] §3.2.2, docs/references.md).

Two measures, both on pairs the vector never saw:

* **pair accuracy**: the share of held-out pairs whose positive projects further along the vector
  than its own negative (0.5 is chance, 1.0 perfect). Pairing removes everything the two texts
  share, so it is a sharper test than classifying single texts;
* **projection gap**: the mean of (positive − negative) projections divided by the pooled standard
  deviation of single projections (a d′; 0 means no separation), with a 95 % interval from a
  seeded bootstrap over the held-out pairs (a pair is resampled whole, so its two texts stay paired).

A layer sweep also reports a logistic **probe accuracy** (single texts, held-out), the usual
"is the concept linearly readable here" number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringCoreError
from steering_core.measure.scores import wilson_interval
from steering_core.vectors.methods import FitContext, FitError, fit


class EvaluationError(SteeringCoreError):
    """A sweep that cannot be run on what it was given."""


@dataclass(frozen=True)
class Separation:
    pair_accuracy: float
    projection_gap: float
    n_pairs: int = 0  # held-out pairs it was measured on
    accuracy_interval: tuple[float, float] = (float("nan"), float("nan"))  # 95 % Wilson
    gap_interval: tuple[float, float] = (float("nan"), float("nan"))  # 95 % bootstrap over pairs


#: Bootstrap resamples of the held-out pairs for d′'s interval (seeded: the same pairs give the same interval).
GAP_RESAMPLES = 2000


def _gap(pp: torch.Tensor, pn: torch.Tensor) -> torch.Tensor:
    """d′ of each row of ``[resamples, pairs]`` projections (NaN where the pooled spread is 0)."""
    pooled = torch.cat([pp - pp.mean(-1, keepdim=True), pn - pn.mean(-1, keepdim=True)], -1).std(-1)
    gap = (pp - pn).mean(-1) / pooled
    return torch.where(pooled > 1e-12, gap, torch.full_like(gap, float("nan")))


def gap_interval(pp: torch.Tensor, pn: torch.Tensor, resamples: int = GAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile-bootstrap interval of d′ over the pairs (NaN with fewer than 3 pairs,
    where resampling says nothing)."""
    n = len(pp)
    if n < 3:
        return float("nan"), float("nan")
    idx = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    gaps = _gap(pp.double()[idx], pn.double()[idx])
    gaps = gaps[torch.isfinite(gaps)]
    if len(gaps) < resamples // 2:
        return float("nan"), float("nan")
    lo, hi = torch.quantile(gaps, torch.tensor([0.025, 0.975], dtype=gaps.dtype))
    return float(lo), float(hi)


def separation(direction: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Separation:
    """Held-out separation of pairs along ``direction`` (see the module docstring)."""
    u = direction.float() / direction.float().norm().clamp(min=1e-12)
    pp, pn = pos.float() @ u, neg.float() @ u
    diff = pp - pn
    acc = float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())
    gap = float(_gap(pp[None], pn[None])[0]) if len(pp) > 1 else float("nan")  # the same d′ its interval resamples
    return Separation(acc, gap, len(diff), wilson_interval(acc * len(diff), len(diff)), gap_interval(pp, pn))


def probe_accuracy(train_pos, train_neg, test_pos, test_neg) -> float:
    """Held-out accuracy of a logistic probe on single texts (standardised features)."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([train_pos, train_neg]).float().numpy()
    y = np.r_[np.ones(len(train_pos)), np.zeros(len(train_neg))]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000).fit((x - mu) / sd, y)
    xt = torch.cat([test_pos, test_neg]).float().numpy()
    yt = np.r_[np.ones(len(test_pos)), np.zeros(len(test_neg))]
    return float(clf.score((xt - mu) / sd, yt))


def split_indices(n: int, heldout: Sequence[int] | None = None, fraction: float = 0.25,
                  seed: int = 0) -> tuple[list[int], list[int]]:
    """Train and held-out pair indices: the dataset's own split when it has one, else a seeded
    ``fraction`` (at least one pair on each side)."""
    if heldout:
        h = sorted(set(int(i) for i in heldout))
        return [i for i in range(n) if i not in set(h)], h
    if n < 2:
        raise EvaluationError("Separation needs held-out pairs: the dataset has fewer than 2 pairs.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n).tolist()
    k = min(n - 1, max(1, round(fraction * n)))
    return sorted(order[k:]), sorted(order[:k])


@dataclass(frozen=True)
class LayerScore:
    layer: int
    method: str
    pair_accuracy: float
    projection_gap: float
    probe_accuracy: float
    norm: float
    n_heldout: int = 0
    accuracy_lo: float = float("nan")  # 95 % Wilson interval of pair_accuracy
    accuracy_hi: float = float("nan")
    gap_lo: float = float("nan")  # 95 % bootstrap interval of projection_gap
    gap_hi: float = float("nan")
    probe_lo: float = float("nan")  # 95 % Wilson interval of probe_accuracy (over 2 × n_heldout texts)
    probe_hi: float = float("nan")


def layer_sweep(acts: dict, train: Sequence[int], test: Sequence[int], method: str = "caa",
                ctx: FitContext | None = None,
                on_layer: Callable[[int], None] | None = None) -> list[LayerScore]:
    """Fit ``method`` on the training pairs at every layer and score it on the held-out pairs.

    ``acts`` maps layer → :class:`~steering_core.vectors.extraction.PairActivations`.
    """
    if not train or not test:
        raise EvaluationError("A layer sweep needs both training and held-out pairs.")
    out = []
    for layer in sorted(acts):
        pa = acts[layer]
        tr, te = pa.subset(train), pa.subset(test)
        res = fit(method, tr.pos, tr.neg, ctx)
        sep = separation(res.direction, te.pos, te.neg)
        pacc = probe_accuracy(tr.pos, tr.neg, te.pos, te.neg) if len(train) >= 2 else float("nan")
        texts = 2 * len(te.pos)
        probe_ci = wilson_interval(pacc * texts, texts) if pacc == pacc else (float("nan"), float("nan"))
        out.append(LayerScore(layer, method, sep.pair_accuracy, sep.projection_gap, pacc, res.norm, sep.n_pairs,
                              *sep.accuracy_interval, *sep.gap_interval, *probe_ci))
        if on_layer is not None:
            on_layer(layer)
    return out


def pair_counts(n_train: int, start: int = 4) -> list[int]:
    """4, 8, 16, … up to the number of training pairs (which is always the last point)."""
    if n_train < 1:
        raise EvaluationError("No training pairs.")
    counts, c = [], start
    while c < n_train:
        counts.append(c)
        c *= 2
    counts.append(n_train)
    return counts


@dataclass(frozen=True)
class EfficiencyPoint:
    method: str
    n_pairs: int
    pair_accuracy: float
    accuracy_sd: float
    projection_gap: float
    gap_sd: float
    repeats: int
    n_heldout: int = 0  # the held-out pairs every point is scored on (the same ones for every point)


def data_efficiency(pa, train: Sequence[int], test: Sequence[int], methods: Sequence[str],
                    ctx: FitContext | None = None, repeats: int = 3, seed: int = 0,
                    counts: Sequence[int] | None = None,
                    on_point: Callable[[str, int], None] | None = None) -> list[EfficiencyPoint]:
    """Held-out separation against the number of training pairs, per method ([Purchase 2025]'s
    data-efficiency sweep). Each point averages ``repeats`` random subsets; the full training set
    is one subset. Methods that need more pairs than a point offers skip that point."""
    from steering_core.vectors.methods import METHODS

    if not methods:
        raise EvaluationError("Choose at least one method.")
    if not train or not test:
        raise EvaluationError("Data efficiency needs both training and held-out pairs.")
    counts = list(counts) if counts else pair_counts(len(train))
    rng = np.random.default_rng(seed)
    te = pa.subset(test)
    out = []
    for name in methods:
        m = METHODS.get(name)
        if m is None:
            raise EvaluationError(f"Unknown method {name!r}.")
        for c in counts:
            if c < max(1, m.min_pairs) or c > len(train):
                continue
            reps = 1 if c == len(train) else repeats
            accs, gaps = [], []
            for _ in range(reps):
                idx = rng.choice(train, size=c, replace=False).tolist()
                sub = pa.subset(idx)
                try:
                    res = fit(name, sub.pos, sub.neg, ctx)
                except FitError:
                    continue
                sep = separation(res.direction, te.pos, te.neg)
                accs.append(sep.pair_accuracy)
                gaps.append(sep.projection_gap)
            if accs:
                whole = c == len(train)
                out.append(EfficiencyPoint(name, c, float(np.mean(accs)), spread_over_subsets(accs, whole),
                                           mean_of_known(gaps), spread_over_subsets(gaps, whole), len(accs), len(test)))
            if on_point is not None:
                on_point(name, c)
    return out


def mean_of_known(x: list[float]) -> float:
    """The mean of the values that are known (NaN: a fit or metric that could not be read)."""
    v = [a for a in x if not math.isnan(a)]
    return float(np.mean(v)) if v else float("nan")


def spread_over_subsets(x: list[float], whole: bool = False) -> float:
    """The spread over subsets of the training pairs (NaN values skipped). One subset gives no spread
    to read, so NaN (unknown, drawn without a bar) rather than a zero-width bar that claims an exact
    figure; except when that subset is ``whole`` training set: the only one there is, so nothing varies."""
    v = [a for a in x if not math.isnan(a)]
    if len(v) > 1 or (v and whole):
        return float(np.std(v))
    return float("nan")
