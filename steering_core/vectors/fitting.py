"""From a dataset to a named vector, and the sweeps that help choose layer and dataset size.

This is the glue the Vectors page calls: activations (cached) → method → a
:class:`~steering_core.vectors.vector.SteeringVector` carrying where it came from. Each function takes an
``on_progress(done, total)`` callback so a page can draw a progress bar.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from steering_core.errors import SteeringCoreError
from steering_core.vectors.evaluation import EvaluationError, LayerScore, data_efficiency, layer_sweep, split_indices
from steering_core.vectors.extraction import POOLING_VERSION, ActivationCache, pair_activations
from steering_core.vectors.methods import METHODS, FitContext, FitError, FitResult, fit

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel
    from steering_core.vectors.vector import SteeringVector

Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class FitRequest:
    dataset: object  # steering_core.datasets.pairs.ContrastiveDataset
    layer: int
    method: str = "caa"
    position: str = "last"
    name: str = ""
    use_heldout: bool = False  # fit on every pair instead of the training split


def _split(dataset) -> tuple[list[int], list[int]]:
    held = [i for i, p in enumerate(dataset.pairs) if getattr(p, "split", "train") == "heldout"]
    return [i for i in range(len(dataset.pairs)) if i not in set(held)], held


def _texts(dataset, idx: Sequence[int] | None = None) -> tuple[list[str], list[str]]:
    pairs = dataset.pairs if idx is None else [dataset.pairs[i] for i in idx]
    return [p.positive for p in pairs], [p.negative for p in pairs]


def _counter(total: int, on_progress: Progress):
    done = [0]

    def tick(n: int = 1) -> None:
        done[0] += n
        if on_progress is not None:
            on_progress(min(done[0], total), total)
    return tick


def vector_name(req: FitRequest) -> str:
    """The name a fit saves under: ``req.name``, or ``<dataset>-<method>-L<layer>``."""
    return req.name or f"{req.dataset.name}-{req.method}-L{req.layer}"


#: Share of pairs ending in the same token above which the ``last`` position gets a warning.
SHARED_LAST_TOKEN = 0.9


def _shared_last_token(model: SteerableModel, dataset, threshold: float) -> tuple[float, str] | None:
    """(share, token) when at least ``threshold`` of the pairs end with the same token in both texts."""
    from collections import Counter

    from steering_core.vectors.extraction import _token_lists

    if not dataset.pairs:
        return None
    pos, neg = _texts(dataset)
    shared = [a[-1] for a, b in zip(_token_lists(model, pos), _token_lists(model, neg)) if a and b and a[-1] == b[-1]]
    share = len(shared) / len(pos)
    if not shared or share < threshold:
        return None
    return share, model.tokenizer.decode([Counter(shared).most_common(1)[0][0]])


def position_warning(model: SteerableModel, dataset, position: str,
                     threshold: float = SHARED_LAST_TOKEN) -> str | None:
    """A warning when ``position`` is ``last`` and at least ``threshold`` of the pairs end with the same
    token in both texts (say both end in "."): the last token's activations then mostly encode that
    shared token, not the difference. None otherwise."""
    found = _shared_last_token(model, dataset, threshold) if position == "last" else None
    if found is None:
        return None
    share, token = found
    return (f"{share:.0%} of the pairs end with the same token in both texts (most often {token!r}), so the "
            "'last' position would mostly learn that token; choose 'diff' (the tokens where the pair differs) "
            "or end the texts where they differ.")


def refit_note(vec: SteeringVector) -> str | None:
    """A sentence when a saved vector was fitted in a way since found wrong, so it is not trusted
    silently: before pooling version 2, ``diff`` averaged in position 0 (the attention sink), and a
    pair that differs from its first token made a vector that is mostly the difference of two sinks."""
    meta = vec.meta or {}
    pooling = meta.get("pooling")
    current = isinstance(pooling, (int, float)) and not isinstance(pooling, bool) and pooling >= 2
    if meta.get("position") == "diff" and not current:  # absent, old or hand-edited: not trusted
        return (f"{vec.name} was fitted at position 'diff' before position 0 (the attention sink) was left out "
                "of it: where its pairs differ from their first token, it is mostly the difference of two sinks "
                "(a norm far above the residual's is the sign). Fit it again.")
    return None


def suggested_position(model: SteerableModel, dataset) -> tuple[str, str | None]:
    """The token position a fit of ``dataset`` should start from, and why when it is not ``last``:
    ``diff`` where ``last`` would mostly learn a token both texts end with (the shipped examples
    end in "." on both sides), else ``last``, the field's usual choice."""
    found = _shared_last_token(model, dataset, SHARED_LAST_TOKEN)
    if found is None:
        return "last", None
    share, token = found
    return "diff", f"{share:.0%} of its pairs end with the same token ({token!r}) in both texts"


def fit_dataset(model: SteerableModel, req: FitRequest, ctx: FitContext | None = None,
                cache: ActivationCache | None = None, on_progress: Progress = None) -> tuple[FitResult, object]:
    """Fit ``req.method`` on the dataset's training pairs at one layer; returns the fit and a
    :class:`SteeringVector` (not yet saved) named ``req.name``."""
    from steering_core.vectors.vector import SteeringVector

    m = METHODS.get(req.method)
    if m is None:
        raise SteeringCoreError(f"Unknown method {req.method!r}.")
    ctx = ctx or FitContext()
    pos_acts = neg_acts = None
    n_used = 0
    encodes = m.needs_sae and m.uses_pairs and not (m.features_suffice and ctx.feature_weights)
    if encodes and ctx.sae is not None and ctx.sae.layer != req.layer:  # before the extraction, not after
        raise FitError(f"{m.label} encodes the pairs with the SAE, which reads block {ctx.sae.layer}; activations "
                       f"of block {req.layer} are not what it was trained on. Fit at block {ctx.sae.layer}.")
    if m.uses_pairs and not (m.features_suffice and ctx.feature_weights):
        from steering_core.datasets.pairs import validate_pairs

        validate_pairs(req.dataset)  # a dataset built in code gets the same checks as a saved one
        train, _ = _split(req.dataset)
        idx = list(range(len(req.dataset.pairs))) if req.use_heldout else train
        pos, neg = _texts(req.dataset, idx)
        if m.needs_model:  # BiPO trains through the model on the completions themselves
            ctx = dataclasses.replace(ctx, model=model, layer=req.layer, texts=(pos, neg))
        tick = _counter(2 * len(pos), on_progress)
        acts = pair_activations(model, pos, neg, [req.layer], req.position, cache=cache or _cache(),
                                on_batch=tick)[req.layer]
        pos_acts, neg_acts, n_used = acts.pos, acts.neg, len(pos)
    res = fit(req.method, pos_acts, neg_acts, ctx)
    meta = {"position": req.position, "pooling": POOLING_VERSION, "pairs_used": n_used, **{k: v for k, v in res.info.items()
                                                               if isinstance(v, (int, float, str))}}
    if res.info.get("features"):
        meta["features"] = {str(k): v for k, v in res.info["features"].items()}
    if res.info.get("targets"):
        meta["targets"] = {str(k): v for k, v in res.info["targets"].items()}
    vec = SteeringVector(name=vector_name(req), layer=req.layer,
                         direction=res.direction, method=req.method,
                         dataset=req.dataset.name if m.uses_pairs else "", model_id=model.name, meta=meta,
                         operator=res.operator, reference=res.reference)
    return res, vec


def sweep_layers(model: SteerableModel, dataset, layers: Sequence[int], method: str = "caa", position: str = "last",
                 ctx: FitContext | None = None, cache: ActivationCache | None = None,
                 on_progress: Progress = None):
    """Held-out separation per layer (one extraction pass serves every layer)."""
    train, held = _split(dataset)
    if not held:
        train, held = split_indices(len(dataset.pairs))
    pos, neg = _texts(dataset)
    total = 2 * len(pos) + len(layers)
    tick = _counter(total, on_progress)
    acts = pair_activations(model, pos, neg, list(layers), position, cache=cache or _cache(), on_batch=tick)
    return layer_sweep(acts, train, held, method, ctx, on_layer=lambda _l: tick(1))


def sweep_pairs(model: SteerableModel, dataset, layer: int, methods: Sequence[str], position: str = "last",
                ctx: FitContext | None = None, repeats: int = 3, cache: ActivationCache | None = None,
                on_progress: Progress = None):
    """Held-out separation against the number of training pairs, one curve per method."""
    from steering_core.vectors.evaluation import pair_counts

    train, held = _split(dataset)
    if not held:
        train, held = split_indices(len(dataset.pairs))
    pos, neg = _texts(dataset)
    counts = pair_counts(len(train))
    total = 2 * len(pos) + len(methods) * len(counts)
    tick = _counter(total, on_progress)
    acts = pair_activations(model, pos, neg, [layer], position, cache=cache or _cache(), on_batch=tick)[layer]
    return data_efficiency(acts, train, held, methods, ctx, repeats=repeats, counts=counts,
                           on_point=lambda _m, _c: tick(1))


_CACHE: ActivationCache | None = None


def _cache() -> ActivationCache:
    """One process-wide activation cache (memory, plus ``cache_dir()/activations`` on disk)."""
    global _CACHE
    if _CACHE is None:
        from steering_core.model.loading import cache_dir

        _CACHE = ActivationCache(cache_dir() / "activations")
    return _CACHE


#: Fewer held-out pairs than this cannot pick a layer: 4 of 4 right has a 95 % Wilson interval of
#: 0.51–1, which every other layer's interval overlaps.
MIN_HELDOUT_TO_PICK = 5


def best_layer(scores: Sequence[LayerScore]) -> LayerScore:
    """The layer a sweep separates best on held-out pairs: highest pair accuracy, then largest d′
    (pair accuracy saturates at 1 on easy datasets, where d′ still ranks the layers)."""
    if not scores:
        raise EvaluationError("A layer sweep with no layers has no best layer.")
    return max(scores, key=lambda s: (s.pair_accuracy, s.projection_gap))
