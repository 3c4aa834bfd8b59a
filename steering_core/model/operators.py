"""Steering operators by name: the ways a direction can change the residual stream.

The default operator adds α·v after block l (docs/design.md §Steering semantics). Others edit the
residual differently (ACE and orthogonal decomposition set the component along v instead of
adding to it, the projection cap clamps it, a trained adaptor from
:mod:`steering_core.vectors.trained` applies its learned edit) but reach the model the same way, as a :class:`~steering_core.model.steering.SteeringTerm` whose ``apply`` does
the edit. This registry gives each one a name, so a saved vector records its operator as a word,
and :meth:`steering_core.vectors.vector.SteeringVector.term` is the one place that turns that
word into a term. Nothing else branches on an operator's name: measurements and pages ask the
registry what an operator is (``additive``, ``needs_reference``, ``label``) and build terms through
:func:`operator_term`.

Adding an operator is one decorated builder, here or anywhere (a test registers a toy one)::

    @register_operator("scale", label="scaling", about="scales the residual instead of adding")
    def scale_term(model, layer, direction, alpha=1.0, *, active=None):
        return make_term(model, layer, direction, alpha, term_cls=ScaleTerm, active=active)

A builder takes ``(model, layer, direction, alpha)``, the keyword ``active`` (optional ``[batch]``
bools: rows left untouched, passed on to :func:`make_term`), and ``reference`` when the operator
``needs_reference``; it validates its input and raises :class:`SteeringError` with a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from steering_core.errors import SteeringError
from steering_core.model.steering import SteeringTerm, as_real_tensor, make_term

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


@dataclass(frozen=True)
class Operator:
    """One registered operator: its builder and what callers need to know without building.

    ``additive``: α·v is added, so α = 0 is exactly no steering, vectors combine by arithmetic,
    and GGUF control vectors (which llama.cpp adds) can hold them. ``needs_reference``: terms need
    a reference point a₀ ``[d_model]`` besides the direction (saved vectors carry it). ``about``
    is one clause for messages ("sets the component ... instead of adding"); ``check``, when
    given, returns a sentence saying why a (direction, reference) pair cannot be used, or None.
    """

    name: str
    build: Callable[..., SteeringTerm]
    label: str
    additive: bool = False
    needs_reference: bool = False
    about: str = ""
    check: Callable[[torch.Tensor, torch.Tensor | None], str | None] | None = None
    bound: bool = False  # bound to one trained adaptor's parameters: not a choice for other vectors

    @property
    def article(self) -> str:
        """The indefinite article for the label ("an ACE vector")."""
        return "an" if self.label[:1].lower() in "aeiou" else "a"


_REGISTRY: dict[str, Operator] = {}


def register_operator(
    name: str,
    *,
    label: str | None = None,
    additive: bool = False,
    needs_reference: bool = False,
    about: str = "",
    check: Callable[[torch.Tensor, torch.Tensor | None], str | None] | None = None,
    bound: bool = False,
) -> Callable[[Callable[..., SteeringTerm]], Callable[..., SteeringTerm]]:
    """Decorator: register a term builder under ``name`` (lower-case word; never reused, since
    saved vectors refer to operators by name). Returns the builder unchanged. ``bound``: the
    operator carries one trained adaptor's parameters (:mod:`steering_core.vectors.trained`), so
    lists of operators to choose from leave it out."""
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise SteeringError(f"An operator name is a lower-case word such as 'add', not {name!r}.")

    def decorate(build: Callable[..., SteeringTerm]) -> Callable[..., SteeringTerm]:
        if name in _REGISTRY:
            raise SteeringError(f"An operator named {name!r} is already registered.")
        _REGISTRY[name] = Operator(name, build, label or name, additive, needs_reference, about, check, bound)
        return build

    return decorate


def unregister_operator(name: str) -> None:
    """Remove an operator (a test's toy one); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def operator_names(include_bound: bool = True) -> tuple[str, ...]:
    """The registered operators' names, in registration order ("add" first); without
    ``include_bound``, only those a user may choose for any direction (no trained adaptors)."""
    return tuple(n for n, op in _REGISTRY.items() if include_bound or not op.bound)


def get_operator(name: str) -> Operator:
    """The operator called ``name``, or a SteeringError listing the known ones."""
    op = _REGISTRY.get(name) if isinstance(name, str) else None
    if op is None:
        raise SteeringError(f"Unknown operator {name!r}; known operators are {', '.join(operator_names(False))}"
                            + (" and trained adaptors' own." if len(operator_names(False)) < len(_REGISTRY) else "."))
    return op


def operator_term(model: SteerableModel, name: str, layer, direction, alpha=1.0, *, reference=None,
                  active=None) -> SteeringTerm:
    """A validated term applying ``direction`` at ``layer`` with the operator called ``name``.
    ``reference`` is given exactly when the operator needs one; ``active`` masks rows out."""
    op = get_operator(name)
    if op.needs_reference:
        if reference is None:
            raise SteeringError(f"The {op.label} operator needs a reference point a0 besides the direction.")
        return op.build(model, layer, direction, alpha, reference=reference, active=active)
    if reference is not None:
        raise SteeringError(f"The {op.label} operator takes no reference point; only "
                            f"{', '.join(n for n, o in _REGISTRY.items() if o.needs_reference)} do.")
    return op.build(model, layer, direction, alpha, active=active)


def implied_operator(reference) -> str:
    """The operator meant by a direction given with or without a reference point and no operator
    name, as the sweep and the Steer view's ``reference=`` arguments are: ACE with one, addition
    without. New callers pass the operator's name instead."""
    return "add" if reference is None else "ace"


# -- addition -------------------------------------------------------------------------------------


@register_operator("add", label="addition", additive=True, about="adds alpha times the direction")
def add_term(model: SteerableModel, layer, direction, alpha=1.0, *, active=None) -> SteeringTerm:
    """α·v added to the output of block ``layer`` (:func:`make_term`)."""
    return make_term(model, layer, direction, alpha, active=active)


# -- ACE: affine concept editing -------------------------------------------------------------------


@dataclass(frozen=True)
class AceTerm(SteeringTerm):
    """Affine concept editing ([Purchase 2025] eq. 2.2, docs/references.md):
    a ← a − proj_r(a) + proj_r(a₀) + α·r.

    Plain addition shifts every activation by the same amount, so an input already far along r
    overshoots. ACE *sets* the component along r to a₀'s component plus α·|r|, whatever it was,
    and leaves the orthogonal part alone. With r = CAA and a₀ = the negatives' mean, α = 0 puts
    every activation at the negatives' level and α = 1 at the positives'. ``vector`` is r,
    ``reference`` is a₀ ``[d_model]``.
    """

    reference: torch.Tensor | None = None

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        r = self.vector.to(hidden.dtype)
        r = r if r.dim() == 2 else r.unsqueeze(0)  # [rows or 1, d]
        r_hat = r / r.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        now = (hidden * r_hat.unsqueeze(1)).sum(-1)  # [batch, pos]: current component along r̂
        a = self.alpha
        a = a.to(hidden.dtype).view(-1, 1) if isinstance(a, torch.Tensor) and a.dim() == 1 else float(a)
        target = (r_hat @ self.reference.to(hidden.dtype)).view(-1, 1) + a * r.norm(dim=-1).view(-1, 1)
        return hidden + (target - now).unsqueeze(-1) * r_hat.unsqueeze(1)


def ace_term(model: SteerableModel, layer, direction, reference, alpha=1.0, active=None) -> AceTerm:
    """Validated :class:`AceTerm`: ``reference`` must be a finite ``[d_model]`` vector; ``active``
    (optional ``[batch]`` bools) edits only some rows, e.g. the steered half of a side-by-side batch."""
    ref = as_real_tensor(reference, "reference")
    if ref.dim() != 1 or ref.shape[0] != model.d_model:
        raise SteeringError(f"ACE reference has shape {tuple(ref.shape)}; it must be a vector of length {model.d_model}.")
    if not torch.isfinite(ref).all():
        raise SteeringError("ACE reference contains NaN or infinite values.")
    if float(as_real_tensor(direction, "vector").norm()) == 0.0:
        raise SteeringError("ACE needs a non-zero direction.")
    return make_term(model, layer, direction, alpha, term_cls=AceTerm, reference=ref.to(model.device, model.dtype),
                     active=active)


def _ace_check(direction: torch.Tensor, reference: torch.Tensor | None) -> str | None:
    return "An ACE vector needs a non-zero direction." if float(direction.abs().max()) == 0.0 else None


@register_operator("ace", label="ACE", needs_reference=True, check=_ace_check,
                   about="sets the component along its direction to a reference level instead of adding")
def _build_ace(model: SteerableModel, layer, direction, alpha=1.0, *, reference, active=None) -> AceTerm:
    return ace_term(model, layer, direction, reference, alpha, active=active)


# -- orthogonal decomposition and projection cap ---------------------------------------------------
#
# Both edit only the component of the residual along the unit direction v̂ and leave the orthogonal
# part exactly alone, as Neuronpedia's steering options do. The maths are pure functions on a
# ``[batch, pos, d]`` residual so tests (and the toy world) can call them without a model.


def _along(hidden: torch.Tensor, vector: torch.Tensor, alpha) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(v̂ ``[rows|1, 1, d]``, the current component a·v̂ ``[batch, pos, 1]``, the level α·|v|
    ``[rows|1, 1, 1]``) for a direction given once or one per row and α given once or per row."""
    v = vector.to(hidden.dtype)
    v = v if v.dim() == 2 else v.unsqueeze(0)
    norm = v.norm(dim=-1, keepdim=True)
    v_hat = (v / norm.clamp(min=1e-12)).unsqueeze(1)
    a = alpha.to(hidden.dtype).view(-1, 1, 1) if isinstance(alpha, torch.Tensor) and alpha.dim() == 1 else float(alpha)
    return v_hat, (hidden * v_hat).sum(-1, keepdim=True), a * norm.unsqueeze(1)


def set_component(hidden: torch.Tensor, vector: torch.Tensor, alpha=1.0) -> torch.Tensor:
    """Orthogonal decomposition: a ← a − (a·v̂)v̂ + α·v. Splits a into its parts along and across v
    and replaces the part along v by α·v, so every activation ends at the same level α·|v| along v
    whatever it started at (α = 0 removes the direction: directional ablation)."""
    v_hat, now, level = _along(hidden, vector, alpha)
    return hidden + (level - now) * v_hat


def cap_component(hidden: torch.Tensor, vector: torch.Tensor, alpha=1.0) -> torch.Tensor:
    """Projection cap: a ← a − max(a·v̂ − α·|v|, 0)·v̂. Activations whose component along v is at or
    below the cap α·|v| pass untouched; those above it are pulled back to it. A floor (keep the
    component at least c) is the cap of −c along −v: pass the negated vector and α."""
    v_hat, now, level = _along(hidden, vector, alpha)
    return hidden - (now - level).clamp(min=0) * v_hat


@dataclass(frozen=True)
class OrthogonalTerm(SteeringTerm):
    """:func:`set_component` as a steering term: the component along ``vector`` is set to α·|v|."""

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return set_component(hidden, self.vector, self.alpha)


@dataclass(frozen=True)
class CapTerm(SteeringTerm):
    """:func:`cap_component` as a steering term: the component along ``vector`` is capped at α·|v|."""

    def apply(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return cap_component(hidden, self.vector, self.alpha)


def _nonzero_check(label: str) -> Callable[[torch.Tensor, torch.Tensor | None], str | None]:
    def check(direction: torch.Tensor, reference: torch.Tensor | None) -> str | None:
        return f"{label} needs a non-zero direction." if float(direction.abs().max()) == 0.0 else None
    return check


def _direction_term(model: SteerableModel, layer, direction, alpha, term_cls: type[SteeringTerm], label: str,
                    active=None) -> SteeringTerm:
    v = as_real_tensor(direction, "vector")
    if v.dim() in (1, 2) and v.numel() and bool((v.reshape(-1, v.shape[-1]).norm(dim=-1) == 0).any()):
        raise SteeringError(f"{label} needs a non-zero direction (in every row).")
    return make_term(model, layer, direction, alpha, term_cls=term_cls, active=active)


@register_operator("orthogonal", label="orthogonal decomposition", check=_nonzero_check("Orthogonal decomposition"),
                   about="sets the component along its direction to alpha times its length instead of adding")
def orthogonal_term(model: SteerableModel, layer, direction, alpha=1.0, *, active=None) -> OrthogonalTerm:
    """A validated :class:`OrthogonalTerm` (a zero direction has no component to set)."""
    return _direction_term(model, layer, direction, alpha, OrthogonalTerm, "Orthogonal decomposition", active)


@register_operator("projection_cap", label="projection cap", check=_nonzero_check("A projection cap"),
                   about="caps the component along its direction at alpha times its length instead of adding")
def projection_cap_term(model: SteerableModel, layer, direction, alpha=1.0, *, active=None) -> CapTerm:
    """A validated :class:`CapTerm` (a zero direction has no component to cap)."""
    return _direction_term(model, layer, direction, alpha, CapTerm, "A projection cap", active)


__all__ = ["AceTerm", "CapTerm", "Operator", "OrthogonalTerm", "ace_term", "add_term", "cap_component", "get_operator",
           "implied_operator", "operator_names", "operator_term", "orthogonal_term", "projection_cap_term",
           "register_operator", "set_component", "unregister_operator"]
