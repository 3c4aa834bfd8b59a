"""Data efficiency on the prompt-pair metrics of [Purchase 2025] §3.2.2 (Figure 4.1): fit every pair
method on growing random subsets of a dataset's training pairs, steer the held-out negatives, and
read what the steering did there: the target SAE features' activation (should rise to the
positives' level), off-target features' activation (should stay put), and the word generated at
the target slot (cosine to the target word, exact match). Every method is fitted on the same
subsets, and a method's fits share forward passes (one batch, a vector per row)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from steering_core.vectors.evaluation import (
    EvaluationError,
    mean_of_known,
    pair_counts,
    split_indices,
    spread_over_subsets,
)
from steering_core.vectors.methods import FitContext, FitError, fit

if TYPE_CHECKING:
    from steering_core.measure.prompt_pairs import FeatureSelection, TargetFeatures, WordConfig
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel
    from steering_core.vectors.extraction import ActivationCache


#: The metrics of :func:`prompt_pair_efficiency`, one figure each: target-feature and off-target-feature
#: activation on steered held-out negatives, and the steered word at the target slot (cosine, exact match).
PAIR_METRICS = ("target", "off_target", "word_similarity", "word_exact")


@dataclass(frozen=True)
class PromptPairSetup:
    """Settings of a prompt-pair data-efficiency sweep. ``alpha`` is in each method's own units, which
    the methods agree on (α = 1 moves by the mean gap between the sides; ACE: to the positives' level,
    docs/design.md §Vector methods). ``methods=None``: every method that fits from pairs (:func:`pair_methods`)."""

    layer: int
    methods: tuple[str, ...] | None = None
    alpha: float = 1.0
    position: str = "last"
    repeats: int = 3
    counts: tuple[int, ...] | None = None  # None: 4, 8, 16, … up to the training pairs
    seed: int = 0
    selection: FeatureSelection | None = None  # None: the document's defaults
    words: WordConfig | None = None  # None: greedy, 4 tokens


@dataclass(frozen=True)
class MetricPoint:
    """One metric of one method at one training-set size: mean and SD over the resamples."""

    method: str
    n_pairs: int
    metric: str
    mean: float
    sd: float
    repeats: int


@dataclass
class PromptPairEfficiency:
    """A finished sweep. ``baseline``: each metric unsteered on the held-out pairs (the dashed line of
    [Purchase 2025] Figure 4.1); ``positives``: the feature metrics on the held-out positives themselves,
    the level steering aims at. ``subsets[n]`` lists the training pairs of each resample of size n
    (every method is fitted on the same ones), so a run can be checked and repeated."""

    points: list[MetricPoint]
    baseline: dict[str, float]
    positives: dict[str, float]
    features: TargetFeatures
    train: list[int]
    heldout: list[int]
    subsets: dict[int, list[list[int]]]
    setup: PromptPairSetup
    seconds: float

    def curve(self, metric: str, method: str) -> list[MetricPoint]:
        """One line of one figure, by number of pairs."""
        return sorted((p for p in self.points if p.metric == metric and p.method == method), key=lambda p: p.n_pairs)

    def warnings(self) -> list[str]:
        """What makes the figures unreadable as a measure of steering, in sentences: target features
        that the unsteered negatives already carry as strongly as the positives do not tell the two
        sides apart, so no curve can rise from the unsteered line towards the positives' line."""
        base, goal = self.baseline.get("target"), self.positives.get("target")
        if base is None or goal is None or not (base == base and goal == goal) or base < goal:
            return []
        return [f"The target features are as active on the unsteered held-out negatives ({base:.3g}) as on the "
                f"positives ({goal:.3g}): they do not tell the two sides apart, so the target-feature figure cannot "
                "show steering towards the positives. Lower 'Largest share of negatives' so that features the "
                "negatives share are left out, or use a dataset whose pairs differ at the target word."]


def pair_methods(ctx: FitContext | None = None) -> list[str]:
    """Registered methods that fit a vector from pairs with what ``ctx`` offers (an SAE adds the
    SAE-based ones, an approximator the targeted ones); hand-picked-feature methods are left out."""
    from steering_core.vectors.methods import available

    ctx = ctx or FitContext()
    return [m.name for m in available(ctx) if m.uses_pairs and not m.needs_features
            and not (m.features_suffice and ctx.feature_weights)]


def resample_subsets(train: Sequence[int], counts: Sequence[int], repeats: int, seed: int = 0) -> dict[int, list[list[int]]]:
    """For each count, ``repeats`` seeded random subsets of the training pairs (one when the count is
    all of them), drawn once so every method sees the same data."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in counts:
        reps = 1 if c == len(train) else repeats
        out[int(c)] = [sorted(rng.choice(list(train), size=c, replace=False).tolist()) for _ in range(reps)]
    return out


#: Rows (held-out pairs × fits) steered in one batch: the fits of a method share forward passes.
EVAL_ROWS = 256


def _fits_steering(model: SteerableModel, layer: int, fits: list, alpha: float, rows_each: int):
    """One Steering over ``len(fits) × rows_each`` rows in which fit k steers rows
    ``[k·rows_each, (k+1)·rows_each)`` only (docs/design.md §Steering semantics: a batch with a
    vector per row equals each row run alone): additive fits as one term with a vector per row (zero
    on the other rows), any other operator (ACE) as its own term masked to its rows."""
    from steering_core.model.operators import operator_term
    from steering_core.model.steering import Steering

    n = len(fits) * rows_each
    terms = []
    added = [k for k, f in enumerate(fits) if f.operator == "add"]
    if added:
        vec = torch.zeros(n, model.d_model)
        for k in added:
            vec[k * rows_each:(k + 1) * rows_each] = fits[k].direction.float()
        terms.append(operator_term(model, "add", layer, vec, alpha))
    for k, f in enumerate(fits):
        if f.operator != "add":
            active = torch.zeros(n, dtype=torch.bool)
            active[k * rows_each:(k + 1) * rows_each] = True
            terms.append(operator_term(model, f.operator, layer, f.direction, alpha, reference=f.reference,
                                       active=active))
    return Steering.of(terms)


def _row_metrics(model: SteerableModel, sae: LoadedSAE, features: TargetFeatures, texts: list[str], slots: list,
                 words: WordConfig, layer: int, alpha: float, fits: list | None) -> list[dict[str, float]]:
    """Each metric's mean over the held-out rows, per fit (``fits=None``: once, unsteered)."""
    from steering_core.measure.prompt_pairs import final_token_features, mean_activation, next_words, word_similarity

    k = 1 if fits is None else len(fits)
    acts = final_token_features(model, sae, texts * k,
                                None if fits is None else _fits_steering(model, layer, fits, alpha, len(texts)))
    target = mean_activation(acts, features.target).view(k, -1)
    off = mean_activation(acts, features.off_target).view(k, -1)
    out = [{"target": float(target[j].mean()), "off_target": float(off[j].mean())} for j in range(k)]
    ids = [i for i, s in enumerate(slots) if s is not None]
    if ids:
        per = len(ids) * words.samples
        steer = None if fits is None else _fits_steering(model, layer, fits, alpha, per)
        got = next_words(model, [slots[i].prefix for i in ids] * k, steer, words, pair_ids=ids * k)
        sim, exact = word_similarity(got, [slots[i].positive for i in ids for _ in range(words.samples)] * k)
        for j in range(k):
            out[j].update(word_similarity=float(sim[j * per:(j + 1) * per].mean()),
                          word_exact=float(exact[j * per:(j + 1) * per].mean()))
    return out


def prompt_pair_efficiency(model: SteerableModel, sae: LoadedSAE, dataset, setup: PromptPairSetup,
                           ctx: FitContext | None = None, cache: ActivationCache | None = None,
                           on_point: Callable[[str, int], None] | None = None) -> PromptPairEfficiency:
    """The three metrics of [Purchase 2025] §3.2.2 against the number of training pairs, per method.

    ``dataset`` is a ``ContrastiveDataset``. Held-out pairs are its own, else a seeded quarter. Target
    and off-target features are chosen once, on all training pairs, so every point is measured
    against the same features. As in the document, vectors are fitted on the texts the feature
    metrics read (cut after the target word unless ``selection.at == "final"``). Each resample fits
    on its subset only and steers the held-out negatives (features at their final token) and the
    text before their target slot (the word written there). Every method is fitted on the same
    subsets, and a method's resamples share batches. Without ``cache`` the activations go through
    extraction's in-memory cache."""

    from steering_core.measure.prompt_pairs import (
        FeatureSelection,
        WordConfig,
        feature_texts,
        find_target_features,
        template_slots,
    )
    from steering_core.vectors.extraction import pair_activations
    from steering_core.vectors.methods import METHODS

    t0 = time.perf_counter()
    pairs = list(dataset.pairs)
    held = [i for i, p in enumerate(pairs) if p.split == "heldout"]
    train, held = split_indices(len(pairs), held, seed=setup.seed)
    methods = list(setup.methods) if setup.methods is not None else pair_methods(ctx)
    if not methods:
        raise EvaluationError("Choose at least one method.")
    for name in methods:
        if name not in METHODS:
            raise EvaluationError(f"Unknown method {name!r}.")
    if isinstance(setup.repeats, bool) or not isinstance(setup.repeats, int) or setup.repeats < 1:
        raise EvaluationError(f"Repeats must be a whole number ≥ 1, got {setup.repeats!r}.")
    counts = list(setup.counts) if setup.counts else pair_counts(len(train))
    counts = [c for c in counts if 1 <= c <= len(train)]
    words = setup.words or WordConfig()
    selection = setup.selection or FeatureSelection()
    features = find_target_features(model, sae, dataset, selection, pairs=train)
    pos_t, neg_t = feature_texts(pairs, None, selection.at)
    kw = {"cache": cache} if cache is not None else {}
    pa = pair_activations(model, pos_t, neg_t, [setup.layer], setup.position, **kw)[setup.layer]
    held_neg = [neg_t[i] for i in held]
    slots = template_slots(pairs, held)
    baseline = _row_metrics(model, sae, features, held_neg, slots, words, setup.layer, setup.alpha, None)[0]
    positives = _row_metrics(model, sae, features, [pos_t[i] for i in held], [], words, setup.layer,
                             setup.alpha, None)[0]
    subsets = resample_subsets(train, counts, setup.repeats, setup.seed)
    per_group = max(1, EVAL_ROWS // max(len(held), sum(s is not None for s in slots) * words.samples, 1))
    points = []
    for name in methods:
        fits = []  # (count, fit) of every resample this method can fit
        for c in counts:
            if c < max(1, METHODS[name].min_pairs):
                continue
            for idx in subsets[c]:
                sub = pa.subset(idx)
                try:
                    fits.append((c, fit(name, sub.pos, sub.neg, ctx)))
                except FitError:
                    continue
        scores = []
        for g in range(0, len(fits), per_group):
            group = [f for _, f in fits[g:g + per_group]]
            scores += _row_metrics(model, sae, features, held_neg, slots, words, setup.layer, setup.alpha, group)
        for c in counts:
            mine = [sc for (cc, _), sc in zip(fits, scores) if cc == c]
            for m in PAIR_METRICS:
                vals = [sc[m] for sc in mine if m in sc]
                if vals:
                    points.append(MetricPoint(name, c, m, mean_of_known(vals), spread_over_subsets(vals, c == len(train)),
                                              len(vals)))
            if on_point is not None:
                on_point(name, c)
    return PromptPairEfficiency(points, baseline, positives, features, train, held, subsets, setup,
                                time.perf_counter() - t0)
