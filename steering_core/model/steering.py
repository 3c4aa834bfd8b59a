"""Steering: add α·v to the residual stream after block l, exactly and only where asked.

The rule (docs/design.md §Steering semantics), which every test in ``tests/model/test_steering.py`` pins
down:

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

The hooks live in :mod:`steering_core.model.hooks`, shared with residual recording
(:mod:`steering_core.model.recording`), which the effects measurement and the residual-norm
read-out use. Operators other than addition (ACE, ...) are
:class:`SteeringTerm` subclasses named in :mod:`steering_core.model.operators`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringError
from steering_core.model.hooks import ACTIVE, hooks_on

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel

# -- terms -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringTerm:
    """Add ``alpha * vector`` to the residual stream after block ``layer``.

    ``vector`` is ``[d_model]`` (same for every row) or ``[batch, d_model]`` (one per row);
    ``alpha`` is a number or a ``[batch]`` tensor. ``active`` (optional ``[batch]`` bools) leaves
    the rows where it is False untouched, which is how an operator that edits even at α = 0 (ACE)
    still has an unsteered half in a side-by-side batch. Subclasses change the operator by
    overriding :meth:`apply` (see :mod:`steering_core.model.operators`).
    """

    layer: int
    vector: torch.Tensor
    alpha: float | torch.Tensor = 1.0
    active: torch.Tensor | None = None  # [batch] bool: rows left untouched where False

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
        return None if self.active is None else int(self.active.shape[0])

    def row_keys(self, batch: int) -> list[bytes]:
        """What this term does to each of ``batch`` rows, as bytes: rows with equal keys are steered
        alike. Covers the per-row fields of this class (vector, α, mask); a subclass that adds
        another per-row field must add it here, or rows differing only in it would be merged."""
        per_row = [self.vector if self.vector.dim() == 2 else None,
                   self.alpha if isinstance(self.alpha, torch.Tensor) and self.alpha.dim() == 1 else None,
                   self.active]
        # one device-to-host copy per tensor, then per-row byte slices
        cols = [None if t is None else t.detach().cpu().reshape(batch, -1).contiguous().view(torch.uint8).numpy()
                for t in per_row]
        return [b"|".join(b"" if c is None else c[i].tobytes() for c in cols) for i in range(batch)]

    def select_rows(self, index: torch.Tensor) -> SteeringTerm:
        """This term for the rows ``index`` of its batch (per-row vectors, α and mask indexed)."""
        changes = {}
        if self.vector.dim() == 2:
            changes["vector"] = self.vector[index.to(self.vector.device)]
        if isinstance(self.alpha, torch.Tensor) and self.alpha.dim() == 1:
            changes["alpha"] = self.alpha[index.to(self.alpha.device)]
        if self.active is not None:
            changes["active"] = self.active[index.to(self.active.device)]
        return replace(self, **changes)

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Return the steered residual ``[batch, pos, d_model]`` given the precomputed delta."""
        if delta.dim() == 2:
            return hidden + delta.unsqueeze(1)
        return hidden + delta

    def edit(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """:meth:`apply`, then the rows ``active`` leaves out put back exactly as they were."""
        edited = self.apply(hidden, delta)
        if self.active is None:
            return edited
        if self.active.shape[0] != hidden.shape[0]:
            raise SteeringError(f"The steering row mask has {self.active.shape[0]} rows but the batch has "
                                f"{hidden.shape[0]}.")
        return torch.where(self.active.view(-1, 1, 1).to(hidden.device), edited, hidden)


def as_real_tensor(x, what: str) -> torch.Tensor:
    """``x`` (tensor, array or list of numbers) as a float32 tensor, or a SteeringError naming ``what``."""
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
    t = as_real_tensor(alpha, "alpha")
    if t.dim() == 0:
        return check_alpha(float(t))
    if t.dim() != 1:
        raise SteeringError(f"alpha must be a number or a 1-D tensor of per-row values, got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        raise SteeringError("alpha contains NaN or infinite values.")
    return t


def make_term(model: SteerableModel, layer, vector, alpha=1.0, term_cls: type[SteeringTerm] = SteeringTerm,
              **extra) -> SteeringTerm:
    """Validate user input and build a term on the model's device and dtype.

    Every way a vector can be wrong raises :class:`SteeringError` with a sentence a person can act on.
    """
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise SteeringError(f"layer must be an integer, got {layer!r}.")
    layer = int(layer)
    if not 0 <= layer < model.n_layers:
        raise SteeringError(f"layer {layer} is out of range: {model.name} has layers 0 to {model.n_layers - 1}.")
    v = as_real_tensor(vector, "vector")
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
    if extra.get("active") is not None:
        extra["active"] = torch.as_tensor(extra["active"], dtype=torch.bool).reshape(-1)
        rows = v.shape[0] if v.dim() == 2 else a.shape[0] if isinstance(a, torch.Tensor) else None
        if rows is not None and extra["active"].shape[0] != rows:
            raise SteeringError(f"The row mask has {extra['active'].shape[0]} entries for {rows} rows.")
    dev, dt = model.device, model.dtype
    if isinstance(a, torch.Tensor):
        a = a.to(dev, dt)
    return term_cls(layer=layer, vector=v.to(dev, dt), alpha=a, **extra)


# -- a validated set of terms ----------------------------------------------------------------------


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

    def row_keys(self, batch: int) -> list[bytes]:
        """One key per row of a ``batch``-row call: rows with equal keys are steered alike."""
        keys = [t.row_keys(batch) for t in self.terms]
        return [b"/".join(k[i] for k in keys) for i in range(batch)]

    def select_rows(self, index: torch.Tensor) -> Steering:
        """This steering for the rows ``index`` of its batch."""
        return Steering.of(t.select_rows(index) for t in self.terms)

    def is_noop(self) -> bool:
        """True when nothing would change (no terms, or every additive delta is exactly zero)."""
        return all(type(t) is SteeringTerm and not bool(d.any()) for t, d in zip(self.terms, self._deltas))

    def apply_at(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        for term, delta in zip(self.terms, self._deltas):
            if term.layer != layer:
                continue
            if delta.dim() == 2 and delta.shape[0] != hidden.shape[0]:
                raise SteeringError(f"steering carries {delta.shape[0]} per-row vectors but the batch has "
                                    f"{hidden.shape[0]} rows.")
            hidden = term.edit(hidden, delta)
        return hidden


def steering(model: SteerableModel, *terms: tuple | SteeringTerm) -> Steering:
    """Build a :class:`Steering` from ``(layer, vector, alpha)`` tuples or ready terms."""
    built = [t if isinstance(t, SteeringTerm) else make_term(model, *t) for t in terms]
    return Steering.of(built)


@contextlib.contextmanager
def steer(model: SteerableModel, steer_set: Steering | Sequence | None) -> Iterator[Steering | None]:
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
    with hooks_on(model, steer_set.layers):
        token = ACTIVE.set(ACTIVE.get() + ((id(model.module), steer_set),))
        try:
            yield steer_set
        finally:
            ACTIVE.reset(token)


def random_unit_vector(d_model: int, seed: int = 0) -> torch.Tensor:
    """A reproducible random direction of norm 1."""
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(d_model, generator=g)
    return v / v.norm()
