"""Trained adaptors that are not one vector (LoReFT, LoReST), steering through the ordinary path.

The Steer, Sweep and Compare code builds every intervention the same way,
``operator_term(model, vector.operator, layer, direction, alpha, reference=...)``, and a saved
vector names its operator by a word (:mod:`steering_core.model.operators`). An adaptor's edit
depends on its parameters (LoReFT's R, W, b), so each trained adaptor is given **its own
operator**, an operator with parameters: :meth:`Adaptor.bind` registers it under
``<kind>_<16 hex digits of a hash of the parameters>``. The name is a content address: the same
parameters always get the same name and different ones never share it, which keeps the
registry's rule that an operator name is never reused for something else. The
:class:`~steering_core.vectors.vector.SteeringVector` of an adaptor carries that operator name and,
as its ``direction``, the adaptor's mean edit on the training negatives (what it does on average,
for norms, cosines and plots); the edit itself always comes from the parameters. Saving writes the
parameters beside the direction (:mod:`steering_core.vectors.safetensors_format`), and reading the
file binds the operator again, so a saved adaptor steers after a restart.

Strength: ``α`` scales the edit, a ← a + α·(f(a) − a). α = 1 is the trained adaptor f, α = 0 is
exactly no steering, and values between interpolate, so an α slider and an α sweep mean something.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

import torch

from steering_core.errors import SteeringError
from steering_core.model.operators import get_operator, operator_names, register_operator
from steering_core.model.steering import SteeringTerm, make_term
from steering_core.vectors.methods import FitResult
from steering_core.vectors.trained.loop import TrainingError

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


@dataclass(frozen=True)
class AdaptorKind:
    """One kind of adaptor: its parameter names, its edit f(a) − a as a pure function, and a
    check of a parameter set (a sentence, or None) that also fixes d_model and the rank."""

    name: str
    label: str
    params: tuple[str, ...]
    delta: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
    check: Callable[[Mapping[str, torch.Tensor]], str | None]
    d_model: Callable[[Mapping[str, torch.Tensor]], int]
    rank: Callable[[Mapping[str, torch.Tensor]], int]
    about: str = ""


_KINDS: dict[str, AdaptorKind] = {}
#: The modules that define the kinds a saved file may name (imported on first use).
KNOWN_KINDS = ("loreft", "lorest")


def register_kind(kind: AdaptorKind) -> AdaptorKind:
    """Add an adaptor kind (each trained-method module registers its own on import)."""
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> AdaptorKind:
    """The adaptor kind called ``name``, importing its module when needed; a sentence otherwise."""
    if name not in _KINDS and name in KNOWN_KINDS:
        importlib.import_module(f"steering_core.vectors.trained.{name}")
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise TrainingError(f"Unknown adaptor kind {name!r}; known kinds are {', '.join(KNOWN_KINDS)}.")
    return kind


@dataclass(frozen=True, eq=False)
class Adaptor:
    """A trained adaptor: its kind, its parameters (float32, CPU) and how it was trained.

    Calling it applies the full trained edit to ``[..., d_model]`` activations, ``adaptor(a)``;
    :meth:`apply` takes an α. ``config`` is JSON-ready facts (rank, steps, losses, seed ...): they
    travel with the saved file but are not part of the adaptor's identity.
    """

    kind: str
    params: dict[str, torch.Tensor]
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = get_kind(self.kind)
        if not isinstance(self.params, Mapping) or set(self.params) != set(spec.params):
            got = sorted(self.params) if isinstance(self.params, Mapping) else type(self.params).__name__
            raise TrainingError(f"A {spec.label} adaptor has the parameters {', '.join(spec.params)}; got {got}.")
        clean = {}
        for name in spec.params:
            t = self.params[name]
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TrainingError(f"The {spec.label} parameter {name} must be a floating-point tensor.")
            t = t.detach().to("cpu", torch.float32).contiguous()
            if not torch.isfinite(t).all():
                raise TrainingError(f"The {spec.label} parameter {name} contains NaN or infinite values.")
            clean[name] = t
        problem = spec.check(clean)
        if problem:
            raise TrainingError(problem)
        try:
            config = json.loads(json.dumps(self.config, allow_nan=False))
        except (TypeError, ValueError):
            raise TrainingError("An adaptor's config must hold only JSON values (text, finite numbers, lists).") from None
        object.__setattr__(self, "params", clean)
        object.__setattr__(self, "config", config)

    @property
    def spec(self) -> AdaptorKind:
        return get_kind(self.kind)

    @property
    def d_model(self) -> int:
        return self.spec.d_model(self.params)

    @property
    def rank(self) -> int:
        return self.spec.rank(self.params)

    @property
    def label(self) -> str:
        """How messages and pages name it, e.g. "LoReFT adaptor (rank 4)"."""
        return f"{self.spec.label} adaptor (rank {self.rank})"

    @property
    def operator(self) -> str:
        """The operator name this adaptor steers under: ``<kind>_<hash of the parameters>``."""
        h = hashlib.sha256(self.kind.encode())
        for name in self.spec.params:
            t = self.params[name]
            h.update(f"|{name}:{tuple(t.shape)}|".encode())
            h.update(t.numpy().tobytes())
        return f"{self.kind}_{h.hexdigest()[:16]}"

    def delta(self, a: torch.Tensor) -> torch.Tensor:
        """f(a) − a, computed in float32 and returned in ``a``'s dtype."""
        return self.spec.delta(a.float(), {k: v.to(a.device) for k, v in self.params.items()}).to(a.dtype)

    def apply(self, a: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """a + α·(f(a) − a): the trained edit at α = 1, none at α = 0."""
        return a + float(alpha) * self.delta(a)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        return self.apply(a, 1.0)

    def mean_edit(self, acts: torch.Tensor) -> torch.Tensor:
        """The average of f(a) − a over ``acts`` ``[n, d]``: the additive summary a saved adaptor
        shows as its direction (for norms and cosines; steering uses the whole adaptor)."""
        with torch.no_grad():
            return self.delta(acts.float()).mean(0)

    def bind(self) -> str:
        """Register this adaptor's operator (once; later calls and equal adaptors reuse it) and
        return its name, which a SteeringVector then carries as its ``operator``."""
        name = self.operator
        with _BIND_LOCK:
            if name not in operator_names():
                register_operator(name, label=self.label, bound=True, about=f"applies its trained {self.spec.about} "
                                  "instead of adding one vector")(_builder(self))
            _BOUND.setdefault(name, self)
        return name


_BOUND: dict[str, Adaptor] = {}
_BIND_LOCK = threading.Lock()


def bound_adaptor(operator: str) -> Adaptor | None:
    """The adaptor an operator name was bound to, or None for an ordinary operator."""
    return _BOUND.get(operator) if isinstance(operator, str) else None


def looks_like_adaptor(operator: str) -> str | None:
    """The kind an operator name claims (``loreft_…``), or None; used to read files whose
    adaptor operator is not bound yet in this process."""
    if not isinstance(operator, str):
        return None
    kind, _, digest = operator.rpartition("_")
    if kind in KNOWN_KINDS and len(digest) == 16 and all(c in "0123456789abcdef" for c in digest):
        return kind
    return None


@dataclass(frozen=True)
class AdaptorTerm(SteeringTerm):
    """A trained adaptor as a steering term: h ← h + α·(f(h) − h) at every position.

    ``vector`` is whatever direction the caller passed (ignored: the edit comes from the
    parameters); ``params`` are the adaptor's tensors on the model's device; α is a number or one
    per row, as for every term, and ``active`` masks rows out, so side-by-side batches work.
    """

    kind: str = ""
    params: Mapping[str, torch.Tensor] | None = None

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        if not isinstance(a, torch.Tensor) and float(a) == 0.0:
            return hidden
        edit = get_kind(self.kind).delta(hidden.float(), self.params).to(hidden.dtype)
        scale = a.to(hidden.dtype).view(-1, 1, 1) if isinstance(a, torch.Tensor) and a.dim() == 1 else float(a)
        return hidden + scale * edit


def _builder(adaptor: Adaptor) -> Callable[..., AdaptorTerm]:
    def build(model: SteerableModel, layer, direction, alpha=1.0, *, active=None) -> AdaptorTerm:
        if adaptor.d_model != model.d_model:
            raise SteeringError(f"This {adaptor.label} was trained for d_model = {adaptor.d_model}, but {model.name} "
                                f"has d_model = {model.d_model}.")
        params = {k: v.to(model.device) for k, v in adaptor.params.items()}
        return make_term(model, layer, direction, alpha, term_cls=AdaptorTerm, kind=adaptor.kind, params=params,
                         active=active)
    return build


def adaptor_result(method: str, adaptor: Adaptor, neg: torch.Tensor) -> FitResult:
    """The registry's view of a trained adaptor: its operator bound, its mean edit on the
    negatives as the direction, and the adaptor itself (callable) on ``FitResult.adaptor``."""
    name = adaptor.bind()
    direction = adaptor.mean_edit(neg)
    info = {k: v for k, v in adaptor.config.items() if isinstance(v, (int, float, str))}
    info.update(produces="adaptor", adaptor_operator=name, gap=float(direction.norm()))
    return FitResult(method, direction, operator=name, info=info, adaptor=adaptor)


def adaptor_term(model: SteerableModel, adaptor: Adaptor, layer: int, alpha=1.0, *, active=None) -> AdaptorTerm:
    """A steering term applying ``adaptor`` at ``layer`` (binding its operator first), for callers
    that hold the adaptor itself rather than a saved vector."""
    name = adaptor.bind()
    direction = torch.zeros(adaptor.d_model)
    direction[0] = 1.0  # the direction is not read by the edit; make_term only checks its shape
    return get_operator(name).build(model, layer, direction, alpha, active=active)


__all__ = ["KNOWN_KINDS", "Adaptor", "AdaptorKind", "AdaptorTerm", "adaptor_result", "adaptor_term", "bound_adaptor",
           "get_kind", "looks_like_adaptor", "register_kind"]
