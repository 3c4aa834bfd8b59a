"""Steering: add α·v to the residual stream after block l, exactly and only where asked.

The rule (DESIGN.md §3), which every test in ``tests/test_steering.py`` pins down:

* the intervention edits the **output of block l** (``blocks.l.hook_resid_post``);
* at **every position** of every forward pass made inside the scope, prompt included, so during
  KV-cached decoding each new token is steered when it is first processed and the cache never
  holds unsteered keys for steered positions (cached and uncached generation agree);
* several terms (layer, vector, α) may be active at once; a term may carry **one vector per
  batch row** (a ``[batch, d_model]`` matrix) or one α per row;
* it is **scoped**: ``with steer(model, steering):`` or a per-call ``steering=`` argument.
  Hooks are reference-counted and removed when the last scope exits, exceptions included;
* the active steering lives in a :class:`contextvars.ContextVar`, so two threads (two browser
  sessions) steering the same model at the same time never see each other's vectors.

The hook machinery also records residuals (:func:`record_residuals`), which the effects
measurement and the residual-norm read-out use.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringError

# ----------------------------------------------------------------------------------------------
# Terms
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringTerm:
    """Add ``alpha * vector`` to the residual stream after block ``layer``.

    ``vector`` is ``[d_model]`` (same for every row) or ``[batch, d_model]`` (one per row);
    ``alpha`` is a number or a ``[batch]`` tensor. Subclasses may change the operator (ACE sets
    the component along a direction instead of adding), by overriding :meth:`apply`.
    """

    layer: int
    vector: torch.Tensor
    alpha: float | torch.Tensor = 1.0

    @property
    def delta(self) -> torch.Tensor:
        """What gets added: ``[d_model]`` or ``[batch, d_model]``."""
        a = self.alpha
        if isinstance(a, torch.Tensor) and a.dim() == 1:
            v = self.vector if self.vector.dim() == 2 else self.vector.unsqueeze(0)
            return a.to(v.dtype).unsqueeze(1) * v
        return float(a) * self.vector

    @property
    def rows(self) -> int | None:
        """Batch size this term is bound to, or None when it applies to any batch."""
        if self.vector.dim() == 2:
            return int(self.vector.shape[0])
        if isinstance(self.alpha, torch.Tensor) and self.alpha.dim() == 1:
            return int(self.alpha.shape[0])
        return None

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Return the steered residual ``[batch, pos, d_model]`` given the precomputed delta."""
        if delta.dim() == 2:
            return hidden + delta.unsqueeze(1)
        return hidden + delta


@dataclass(frozen=True)
class AceTerm(SteeringTerm):
    """Affine concept editing (document 000 eq. 2.2): a ← a − proj_r(a) + proj_r(a₀) + α·r.

    Plain addition shifts every activation by the same amount, so an input already far along r
    overshoots. ACE *sets* the component along r to a₀'s component plus α·|r|, whatever it was,
    and leaves the orthogonal part alone. With r = CAA and a₀ = the negatives' mean, α = 0 puts
    every activation at the negatives' level and α = 1 at the positives'. ``vector`` is r,
    ``reference`` is a₀ ``[d_model]``.
    """

    reference: torch.Tensor | None = None
    active: torch.Tensor | None = None  # [batch] bool: rows left untouched where False

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        r = self.vector.to(hidden.dtype)
        r = r if r.dim() == 2 else r.unsqueeze(0)  # [rows or 1, d]
        r_hat = r / r.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        now = (hidden * r_hat.unsqueeze(1)).sum(-1)  # [batch, pos]: current component along r̂
        a = self.alpha
        a = a.to(hidden.dtype).view(-1, 1) if isinstance(a, torch.Tensor) and a.dim() == 1 else float(a)
        target = (r_hat @ self.reference.to(hidden.dtype)).view(-1, 1) + a * r.norm(dim=-1).view(-1, 1)
        edited = hidden + (target - now).unsqueeze(-1) * r_hat.unsqueeze(1)
        if self.active is None:
            return edited
        if self.active.shape[0] != hidden.shape[0]:
            raise SteeringError(f"ACE row mask has {self.active.shape[0]} rows but the batch has {hidden.shape[0]}.")
        return torch.where(self.active.view(-1, 1, 1).to(hidden.device), edited, hidden)


def ace_term(model, layer, direction, reference, alpha=1.0, active=None) -> AceTerm:
    """Validated :class:`AceTerm`: ``reference`` must be a finite ``[d_model]`` vector; ``active``
    (optional ``[batch]`` bools) edits only some rows, e.g. the steered half of a side-by-side batch."""
    ref = _as_tensor(reference, "reference")
    if ref.dim() != 1 or ref.shape[0] != model.d_model:
        raise SteeringError(f"ACE reference has shape {tuple(ref.shape)}; it must be a vector of length {model.d_model}.")
    if not torch.isfinite(ref).all():
        raise SteeringError("ACE reference contains NaN or infinite values.")
    if float(_as_tensor(direction, "vector").norm()) == 0.0:
        raise SteeringError("ACE needs a non-zero direction.")
    if active is not None:
        active = torch.as_tensor(active, dtype=torch.bool).reshape(-1)
    return make_term(model, layer, direction, alpha, term_cls=AceTerm, reference=ref.to(model.device, model.dtype),
                     active=active)


def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise SteeringError(f"{what} must be numeric, got dtype {x.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, (list, tuple)):
        try:
            t = torch.tensor(x, dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise SteeringError(f"{what} must be a list of numbers.") from exc
    else:
        raise SteeringError(f"{what} must be a tensor, array or list, not {type(x).__name__}.")
    if t.is_complex() or t.dtype == torch.bool:
        raise SteeringError(f"{what} must be real-valued, got {t.dtype}.")
    return t.float()


def check_alpha(alpha) -> float | torch.Tensor:
    """A finite number, or a finite 1-D tensor of per-row values; anything else is a SteeringError."""
    if isinstance(alpha, (int, float, np.floating, np.integer)) and not isinstance(alpha, bool):
        a = float(alpha)
        if not math.isfinite(a):
            raise SteeringError(f"alpha must be a finite number, got {alpha}.")
        return a
    t = _as_tensor(alpha, "alpha")
    if t.dim() == 0:
        return check_alpha(float(t))
    if t.dim() != 1:
        raise SteeringError(f"alpha must be a number or a 1-D tensor of per-row values, got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        raise SteeringError("alpha contains NaN or infinite values.")
    return t


def make_term(model, layer, vector, alpha=1.0, term_cls: type[SteeringTerm] = SteeringTerm, **extra) -> SteeringTerm:
    """Validate user input and build a term on the model's device and dtype.

    Every way a vector can be wrong raises :class:`SteeringError` with a sentence a person can act on.
    """
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise SteeringError(f"layer must be an integer, got {layer!r}.")
    layer = int(layer)
    if not 0 <= layer < model.n_layers:
        raise SteeringError(f"layer {layer} is out of range: {model.name} has layers 0 to {model.n_layers - 1}.")
    v = _as_tensor(vector, "vector")
    if v.dim() == 2 and v.shape[0] == 1 and v.shape[1] == model.d_model:
        v = v[0]
    if v.dim() not in (1, 2) or v.shape[-1] != model.d_model:
        raise SteeringError(
            f"vector has shape {tuple(v.shape)}, but {model.name} needs length d_model = {model.d_model} "
            f"(or a [batch, {model.d_model}] matrix, one vector per row)."
        )
    if not torch.isfinite(v).all():
        raise SteeringError("vector contains NaN or infinite values.")
    a = check_alpha(alpha)
    if isinstance(a, torch.Tensor) and v.dim() == 2 and a.shape[0] != v.shape[0]:
        raise SteeringError(f"{a.shape[0]} alphas for {v.shape[0]} vectors: give one alpha per row.")
    dev, dt = model.device, model.dtype
    if isinstance(a, torch.Tensor):
        a = a.to(dev, dt)
    return term_cls(layer=layer, vector=v.to(dev, dt), alpha=a, **extra)


# ----------------------------------------------------------------------------------------------
# A validated set of terms
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Steering:
    """An immutable set of terms for one model, with each term's delta computed once."""

    terms: tuple[SteeringTerm, ...]
    _deltas: tuple[torch.Tensor, ...] = field(repr=False, default=())

    @classmethod
    def of(cls, terms: Iterable[SteeringTerm]) -> "Steering":
        terms = tuple(terms)
        rows = {t.rows for t in terms if t.rows is not None}
        if len(rows) > 1:
            raise SteeringError(f"Steering terms are bound to different batch sizes {sorted(rows)}.")
        return cls(terms=terms, _deltas=tuple(t.delta for t in terms))

    @property
    def layers(self) -> set[int]:
        return {t.layer for t in self.terms}

    @property
    def rows(self) -> int | None:
        return next((t.rows for t in self.terms if t.rows is not None), None)

    def is_noop(self) -> bool:
        """True when nothing would change (no terms, or every additive delta is exactly zero)."""
        return all(type(t) is SteeringTerm and not bool(d.any()) for t, d in zip(self.terms, self._deltas))

    def apply_at(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        for term, delta in zip(self.terms, self._deltas):
            if term.layer != layer:
                continue
            if delta.dim() == 2 and delta.shape[0] != hidden.shape[0]:
                raise SteeringError(
                    f"steering carries {delta.shape[0]} per-row vectors but the batch has {hidden.shape[0]} rows."
                )
            hidden = term.apply(hidden, delta)
        return hidden


def steering(model, *terms: tuple | SteeringTerm) -> Steering:
    """Build a :class:`Steering` from ``(layer, vector, alpha)`` tuples or ready terms."""
    built = [t if isinstance(t, SteeringTerm) else make_term(model, *t) for t in terms]
    return Steering.of(built)


# ----------------------------------------------------------------------------------------------
# Hook registry: one hook per (model, layer), reference-counted, reading context variables
# ----------------------------------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[tuple] = contextvars.ContextVar("steering_active", default=())
_RECORDERS: contextvars.ContextVar[tuple] = contextvars.ContextVar("steering_recorders", default=())


class _StopForward(Exception):
    """Raised by a recorder once the last layer it needs has run: skips the rest of the model."""


class _Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.handles: dict[int, object] = {}
        self.counts: dict[int, int] = {}


_REGISTRIES: "weakref.WeakKeyDictionary[torch.nn.Module, _Registry]" = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def _registry(model) -> _Registry:
    with _REGISTRIES_LOCK:
        reg = _REGISTRIES.get(model.module)
        if reg is None:
            reg = _REGISTRIES[model.module] = _Registry()
        return reg


def _make_hook(key: int, layer: int):
    def hook(_module, _inputs, output):
        active = _ACTIVE.get()
        recorders = _RECORDERS.get()
        if not active and not recorders:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        for rec in recorders:
            if rec.before_steering and rec.key == key and layer in rec.layers:
                rec.keep(layer, hidden)
        changed = False
        for owner, steer_set in active:
            if owner == key and layer in steer_set.layers:
                hidden = steer_set.apply_at(layer, hidden)
                changed = True
        for rec in recorders:
            if rec.key == key and layer in rec.layers:
                if not rec.before_steering:
                    rec.keep(layer, hidden)
                if rec.stop_after is not None and layer == rec.stop_after:
                    raise _StopForward
        if not changed:
            return None
        if isinstance(output, tuple):
            return (hidden,) + tuple(output[1:])
        return hidden

    return hook


@contextlib.contextmanager
def _hooks_on(model, layers: Iterable[int]) -> Iterator[None]:
    reg = _registry(model)
    key = id(model.module)
    acquired: list[int] = []
    try:
        with reg.lock:
            for layer in sorted(set(layers)):
                if reg.counts.get(layer, 0) == 0:
                    module = model.backend.layer_module(layer)
                    reg.handles[layer] = module.register_forward_hook(_make_hook(key, layer))
                reg.counts[layer] = reg.counts.get(layer, 0) + 1
                acquired.append(layer)
        yield
    finally:
        with reg.lock:
            for layer in acquired:
                reg.counts[layer] -= 1
                if reg.counts[layer] == 0:
                    reg.handles.pop(layer).remove()
                    del reg.counts[layer]


def installed_hook_count(model) -> int:
    """Hooks this module has on the model right now (0 whenever no scope is open)."""
    reg = _registry(model)
    with reg.lock:
        return len(reg.handles)


@contextlib.contextmanager
def steer(model, steer_set: Steering | Sequence | None) -> Iterator[Steering | None]:
    """Scope inside which every forward pass of ``model`` in *this thread/context* is steered.

    Accepts a :class:`Steering`, a list of terms/tuples, or None (no steering). Do not ``yield``
    out of a generator while inside this scope: the context variable would leak to the caller.
    """
    if steer_set is None:
        yield None
        return
    if not isinstance(steer_set, Steering):
        steer_set = steering(model, *steer_set)
    if not steer_set.terms:
        yield steer_set
        return
    with _hooks_on(model, steer_set.layers):
        token = _ACTIVE.set(_ACTIVE.get() + ((id(model.module), steer_set),))
        try:
            yield steer_set
        finally:
            _ACTIVE.reset(token)


@dataclass
class _Recorder:
    key: int
    layers: set[int]
    stop_after: int | None
    store: dict[int, torch.Tensor] = field(default_factory=dict)
    before_steering: bool = False
    append: bool = False
    chunks: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def keep(self, layer: int, hidden: torch.Tensor) -> None:
        if self.append:
            self.chunks.setdefault(layer, []).append(hidden.detach().clone())
        else:
            self.store[layer] = hidden.detach().clone()


def record_residuals(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layers: Sequence[int],
    steering: Steering | Sequence | None = None,
    stop_early: bool = True,
) -> dict[int, torch.Tensor]:
    """Residuals after the given blocks (``[batch, pos, d_model]`` each), optionally while steering.

    With ``stop_early`` the forward pass ends after the deepest requested block, which is what
    makes measuring SAE features at a middle layer cheap.
    """
    layers = sorted({int(layer) for layer in layers})
    for layer in layers:
        if not 0 <= layer < model.n_layers:
            raise SteeringError(f"layer {layer} is out of range 0..{model.n_layers - 1}.")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    rec = _Recorder(id(model.module), set(layers), layers[-1] if stop_early and layers else None)
    with torch.no_grad(), steer(model, steering), _hooks_on(model, layers):
        token = _RECORDERS.set(_RECORDERS.get() + (rec,))
        try:
            model.backend.forward(input_ids, attention_mask)
        except _StopForward:
            pass
        finally:
            _RECORDERS.reset(token)
    return {layer: rec.store[layer] for layer in layers}


@contextlib.contextmanager
def recording(model, layers: Sequence[int], before_steering: bool = True) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Collect the residual after the given blocks on *every* forward pass inside the scope.

    Yields ``{layer: [chunk, ...]}``: one ``[batch, new_positions, d_model]`` chunk per forward
    call (the prefill, then one per decoding step). With ``before_steering`` the residual is read
    before this layer's own steering is added. Because steering at block l only changes what
    blocks after l see, that is exactly what an unsteered re-run of the steered rollout would
    give at block l, so effect measurement needs no second pass over the rollouts.
    """
    layers = sorted({int(layer) for layer in layers})
    for layer in layers:
        if not 0 <= layer < model.n_layers:
            raise SteeringError(f"layer {layer} is out of range 0..{model.n_layers - 1}.")
    rec = _Recorder(id(model.module), set(layers), None, before_steering=before_steering, append=True)
    for layer in layers:
        rec.chunks[layer] = []
    with _hooks_on(model, layers):
        token = _RECORDERS.set(_RECORDERS.get() + (rec,))
        try:
            yield rec.chunks
        finally:
            _RECORDERS.reset(token)


def random_unit_vector(d_model: int, seed: int = 0) -> torch.Tensor:
    """A reproducible random direction of norm 1."""
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(d_model, generator=g)
    return v / v.norm()
