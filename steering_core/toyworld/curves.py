"""Steered-attribute accuracy against the number of steering examples, for every method
([Purchase 2025] §3.1.3 after [Krasheninnikov 2024] Fig. 1; docs/references.md).

Protocol, per repeat r: draw a task (the given attribute, or a random one), a pool of steering
pairs, a test set and a validation set from a seed of their own; for each n in 4, 8, …, fit every
method on the *first* n pairs of the pool (the pool is i.i.d., so a prefix is a random subset and
the curves of one repeat are nested, which makes them smoother than independent draws) and score
the test set. Test inputs are separate draws from the pool and are never fitted on. Repeats give
a mean and a spread per point.

Steering strength. The registry scales every vector so that α = 1 is "the mean gap between the
two sides" (docs/design.md §Vector methods), which need not be enough to flip a prediction. With
several ``alphas`` each fit is scored on the validation inputs at every α and the α with the best
target × kept accuracy is used on the test set (the product, so that an α that steers only by
breaking the other attributes is not chosen); the document likewise tries a range of
hyperparameters per adaptor. A single α is simply used.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from steering_core.errors import SteeringCoreError
from steering_core.toyworld.adapt import (
    EditMethod,
    edit_from_fit,
    fit_edit,
    method_name,
    min_pairs,
    resolve_methods,
    scaled,
)
from steering_core.toyworld.data import ToyWorldError
from steering_core.toyworld.mlp import TrainedModel
from steering_core.toyworld.steer import (
    SteeringSplit,
    SteeringTask,
    check_task,
    make_split,
    pair_activations,
    space_of,
    steered_accuracy,
)
from steering_core.vectors.methods import FitContext


def example_counts(max_examples: int, start: int = 4) -> list[int]:
    """4, 8, 16, … up to ``max_examples`` (powers of two, as the document sweeps)."""
    if max_examples < start:
        raise ToyWorldError(f"The largest number of steering examples must be at least {start}, got {max_examples}.")
    out, n = [], start
    while n <= max_examples:
        out.append(n)
        n *= 2
    return out


@dataclass(frozen=True)
class CurveConfig:
    """One sweep. ``methods`` None: every registry method that fits from activation pairs.
    ``attribute`` None: a random attribute per repeat. ``pool`` None: ``max(ns)`` pairs.
    ``contexts`` gives a method its :class:`FitContext` by name (a trained method's config, the
    probe's regularisation …); methods not named get the registry's defaults."""

    layer: int = 2
    methods: tuple[str | EditMethod, ...] | None = None
    ns: tuple[int, ...] = tuple(example_counts(4096))
    repeats: int = 20
    n_test: int = 1000
    n_val: int = 200
    pool: int | None = None
    attribute: int | None = None
    target: int = 0
    alphas: tuple[float, ...] = (1.0,)
    seed: int = 0
    contexts: Mapping[str, FitContext] | None = None  # per-method settings (e.g. a LoreftConfig in .training)

    def __post_init__(self):
        if not self.ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.ns):
            raise ToyWorldError(f"Numbers of steering examples must be whole numbers ≥ 1, got {list(self.ns)}.")
        if self.pool is not None and max(self.ns) > self.pool:
            raise ToyWorldError(f"{max(self.ns):,} steering examples were asked for but only {self.pool:,} are "
                                "available in the pool; lower the largest count or enlarge the pool.")
        if self.repeats < 1 or self.n_test < 1:
            raise ToyWorldError(f"Need at least one repeat and one test input, got {self.repeats} and {self.n_test}.")
        if not self.alphas or not all(isinstance(a, (int, float)) and math.isfinite(a) for a in self.alphas):
            raise ToyWorldError(f"Steering strengths must be finite numbers, got {list(self.alphas)}.")
        if len(self.alphas) > 1 and self.n_val < 1:
            raise ToyWorldError("Choosing among several alphas needs validation inputs (n_val ≥ 1).")

    @property
    def pool_size(self) -> int:
        return self.pool if self.pool is not None else max(self.ns)


@dataclass(frozen=True)
class CurvePoint:
    """One fit scored: repeat, n, method, the α used, test target and kept accuracy (NaN when
    the method could not fit, with the reason in ``error``)."""

    repeat: int
    n: int
    method: str
    alpha: float
    target_accuracy: float
    kept_accuracy: float
    seconds: float
    error: str | None = None


@dataclass
class CurveResult:
    """Every point of a sweep, and its summaries. ``target[method][r][i]`` is repeat r at ``ns[i]``."""

    ns: list[int]
    methods: list[str]
    target: dict[str, list[list[float]]]
    kept: dict[str, list[list[float]]]
    alpha: dict[str, list[list[float]]]
    baseline: list[float]
    attributes: list[int]
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def _stat(self, table: dict[str, list[list[float]]], method: str, fn: Callable[[torch.Tensor], torch.Tensor]):
        t = torch.tensor(table[method], dtype=torch.float64)  # [repeats, ns]
        out = []
        for col in t.T:
            ok = col[~torch.isnan(col)]
            out.append(float(fn(ok)) if ok.numel() else float("nan"))
        return out

    def mean(self, method: str, kept: bool = False) -> list[float]:
        """Mean over repeats per n (NaN-skipping) of the target (or kept) accuracy."""
        return self._stat(self.kept if kept else self.target, method, lambda x: x.mean())

    def std(self, method: str, kept: bool = False) -> list[float]:
        """Standard deviation over repeats per n; NaN (unknown, drawn without a band) from a single
        repeat, which has no spread to read: a zero would claim an exact figure."""
        return self._stat(self.kept if kept else self.target, method,
                          lambda x: x.std(unbiased=False) if x.numel() > 1 else torch.tensor(float("nan")))

    def to_dict(self) -> dict:
        """Plain JSON values (a point that could not be fitted is null), with a per-method summary."""
        d = asdict(self)
        d["summary"] = {m: {"mean": self.mean(m), "std": self.std(m), "kept_mean": self.mean(m, kept=True)}
                        for m in self.methods}
        return json_safe(d)

    @classmethod
    def from_dict(cls, d: dict) -> "CurveResult":
        keys = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in keys}
        for table in ("target", "kept", "alpha"):
            d[table] = {m: [[float("nan") if v is None else v for v in row] for row in rows]
                        for m, rows in d[table].items()}
        return cls(**d)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False), encoding="utf-8")
        return path


def json_safe(x):
    """JSON has no NaN: write null instead."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    return x


def load_json(path: str | Path) -> CurveResult:
    """A :class:`CurveResult` saved by :meth:`CurveResult.save_json` (to redraw its figure)."""
    return CurveResult.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def repeat_task(trained: TrainedModel, config: CurveConfig, repeat: int) -> SteeringTask:
    """The task of repeat ``repeat``: the configured attribute, or one drawn from the repeat's seed."""
    attr = config.attribute
    if attr is None:
        attr = int(torch.randint(0, trained.world.m, (1,), generator=torch.Generator().manual_seed(
            _repeat_seed(config, repeat) + 17)))
    return SteeringTask(attribute=attr, layer=config.layer, target=config.target)


def repeat_split(trained: TrainedModel, config: CurveConfig, repeat: int) -> SteeringSplit:
    """Steering pool, test and validation inputs of repeat ``repeat`` (reproducible from the config)."""
    task = repeat_task(trained, config, repeat)
    return make_split(trained.world, task, config.pool_size, config.n_test, _repeat_seed(config, repeat), config.n_val)


def _repeat_seed(config: CurveConfig, repeat: int) -> int:
    return 1_000_003 * (config.seed + 1) + 7_919 * repeat


def _best_alpha(trained: TrainedModel, split: SteeringSplit, method, pos, neg, alphas: Sequence[float],
                ctx: FitContext | None):
    """Fit once (a fit does not depend on α), then pick α on the validation inputs; returns
    (edit, α)."""
    space, layer = space_of(trained.model), split.task.layer
    if len(alphas) == 1:
        return fit_edit(method, pos, neg, space, layer, alphas[0], ctx).edit, float(alphas[0])
    fitted = fit_edit(method, pos, neg, space, layer, 1.0, ctx)
    best = None
    for a in alphas:
        edit = edit_from_fit(fitted.result, space, layer, a) if fitted.result is not None else scaled(fitted.edit, a)
        s = steered_accuracy(trained.model, split, edit, on="val")
        value = s.target_accuracy * s.kept_accuracy
        if best is None or value > best[0] + 1e-12:
            best = (value, edit, float(a))
    return best[1], best[2]


def run_curves(trained: TrainedModel, config: CurveConfig = CurveConfig(),
               on_point: Callable[[CurvePoint], None] | None = None) -> CurveResult:
    """Evaluate every method of ``config`` against the number of steering examples.

    Everything that can be wrong with the settings is checked before any fitting. A method that
    cannot fit at some n (a FitError: too few pairs, degenerate data) gets NaN there and a note,
    and the sweep goes on."""
    t0 = time.perf_counter()
    methods = resolve_methods(config.methods)
    names = [method_name(m) for m in methods]
    for m in methods:
        if min(config.ns) < min_pairs(m):
            raise ToyWorldError(f"{method_name(m)} needs at least {min_pairs(m)} steering examples; the smallest "
                                f"count asked for is {min(config.ns)}.")
    check_task(trained.world, trained.model, repeat_task(trained, config, 0))
    contexts = dict(config.contexts or {})
    unknown = sorted(set(contexts) - set(names))
    if unknown:
        raise ToyWorldError(f"Settings were given for {', '.join(unknown)}, which this sweep does not run.")
    ns = sorted(set(config.ns))
    shape = lambda: [[float("nan")] * len(ns) for _ in range(config.repeats)]
    target, kept, alpha = ({n: shape() for n in names} for _ in range(3))
    res = CurveResult(ns, names, target, kept, alpha, [], [], settings=_settings(trained, config, names))
    for r in range(config.repeats):
        split = repeat_split(trained, config, r)
        res.baseline.append(steered_accuracy(trained.model, split, None).target_accuracy)
        res.attributes.append(split.task.attribute)
        for i, n in enumerate(ns):
            pos, neg = pair_activations(trained.model, split, n)
            for m, name in zip(methods, names):
                t1, err = time.perf_counter(), None
                try:
                    edit, a = _best_alpha(trained, split, m, pos, neg, config.alphas, contexts.get(name))
                    s = steered_accuracy(trained.model, split, edit)
                    target[name][r][i], kept[name][r][i], alpha[name][r][i] = s.target_accuracy, s.kept_accuracy, a
                except SteeringCoreError as e:
                    err, a = str(e), float("nan")
                    res.notes.append(f"repeat {r}, n = {n}, {name}: {e}")
                if on_point is not None:
                    on_point(CurvePoint(r, n, name, a, target[name][r][i], kept[name][r][i],
                                        time.perf_counter() - t1, err))
    res.seconds = time.perf_counter() - t0
    return res


def _settings(trained: TrainedModel, config: CurveConfig, names: list[str]) -> dict:
    w = trained.world.config
    contexts = {k: repr(getattr(v, "training", None)) for k, v in (config.contexts or {}).items()}
    return {"m": w.m, "noise_std": w.noise_std, "world_seed": w.seed, "layer": config.layer, "methods": names,
            "repeats": config.repeats, "n_test": config.n_test, "n_val": config.n_val, "pool": config.pool_size,
            "attribute": config.attribute, "target": config.target, "alphas": list(config.alphas),
            "seed": config.seed, "contexts": contexts, "model_accuracy": trained.report.accuracy,
            "model_train_seconds": trained.report.seconds}


__all__ = ["CurveConfig", "CurvePoint", "CurveResult", "example_counts", "load_json", "repeat_split", "repeat_task",
           "run_curves"]
