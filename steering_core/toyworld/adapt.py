"""The project's method and operator registries, applied to the toy MLP's activations.

Nothing here re-implements a method. Fitting goes through :func:`steering_core.vectors.methods.fit`
(CAA, ACE, probe, PCA … take raw ``[pairs, d_model]`` activations, which is exactly what the toy
world has), and applying a fitted vector goes through the operator registry
(:func:`steering_core.model.operators.operator_term`), whose terms edit a ``[batch, pos, d]``
residual. The only adapter needed is :class:`ActivationSpace`, a stand-in for the
:class:`~steering_core.model.steerable.SteerableModel` attributes a term builder reads (name, number
of layers, width, device, dtype), so every registered operator (addition, ACE, and any added
later) works on toy activations unchanged.

Steering need not be a vector: LoReFT and LoReST *edit* an activation, ``a ← f(a)``. An
:data:`Edit` is therefore any callable ``[n, d] → [n, d]``, and :func:`edit_from_fit` accepts a fit
result that carries one (see there) as well as a direction with an operator. Methods not in the
registry can be passed as :class:`EditMethod` objects.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Callable

import torch

from steering_core.errors import SteeringCoreError
from steering_core.model.operators import get_operator, operator_term
from steering_core.toyworld.data import ToyWorldError
from steering_core.vectors.methods import METHODS, FitContext, FitResult, fit

Edit = Callable[[torch.Tensor], torch.Tensor]
"""A steering edit on activations at one layer: ``[n, d_model] → [n, d_model]``."""

EDIT_KEYS = ("edit", "adaptor", "intervention", "module")
"""Where :func:`edit_from_fit` looks for a callable edit on a fit result (attribute, then ``info``)."""


@dataclass(frozen=True)
class ActivationSpace:
    """What an operator's term builder needs to know about "the model": enough to validate a
    layer and a vector and to place tensors. The toy MLP's residual stream is such a space."""

    n_layers: int
    d_model: int
    name: str = "the toy MLP"
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class EditMethod:
    """A steering method outside the registry: ``fit(pos, neg) -> Edit`` on ``[pairs, d]``
    activations. How callers plug in an intervention the registry cannot express (yet)."""

    name: str
    fit: Callable[[torch.Tensor, torch.Tensor], Edit]
    min_pairs: int = 1


@dataclass
class FittedEdit:
    """A fitted method ready to steer: its edit, and the registry's result when there is one."""

    method: str
    edit: Edit
    result: FitResult | None = None


def steering_methods() -> list[str]:
    """Registered methods that fit from positive/negative activation pairs alone, in registry order.

    A method qualifies when it reads the pairs and needs nothing else: no SAE, no approximator, no
    hand-picked features, and no other requirement the registry may grow (any true ``needs_*``
    field, e.g. a language model). So a method registered later under those rules (LoReFT,
    LoReST) shows up here without any change to the toy world.
    """
    out = []
    for m in METHODS.values():
        needs = [f.name for f in fields(m) if f.name.startswith("needs_") and getattr(m, f.name)]
        if getattr(m, "uses_pairs", True) and not needs:
            out.append(m.name)
    return out


def resolve_methods(methods) -> list[str | EditMethod]:
    """Check a list of method names (or :class:`EditMethod` objects) before any work is done;
    None means every method :func:`steering_methods` lists."""
    if methods is None:
        return list(steering_methods())
    if isinstance(methods, (str, EditMethod)):
        methods = [methods]
    usable, out = steering_methods(), []
    for m in methods:
        if isinstance(m, EditMethod):
            out.append(m)
        elif m not in METHODS:
            raise ToyWorldError(f"Unknown method {m!r}; the toy world can use: {', '.join(usable)}.")
        elif m not in usable:
            raise ToyWorldError(f"Method {m!r} needs more than activation pairs (an SAE, a model or chosen "
                                f"features); the toy world can use: {', '.join(usable)}.")
        else:
            out.append(m)
    if not out:
        raise ToyWorldError("No method to evaluate: name at least one.")
    names = [method_name(m) for m in out]
    if len(set(names)) != len(names):
        raise ToyWorldError(f"A method is listed twice: {', '.join(names)}.")
    return out


def method_name(method: str | EditMethod) -> str:
    return method.name if isinstance(method, EditMethod) else method


def min_pairs(method: str | EditMethod) -> int:
    """The fewest pairs ``method`` fits from."""
    return method.min_pairs if isinstance(method, EditMethod) else METHODS[method].min_pairs


def _callable_edit(result: FitResult) -> Edit | None:
    for key in EDIT_KEYS:
        f = getattr(result, key, None)
        if callable(f) and not inspect.isclass(f):
            return f
    for key in EDIT_KEYS:
        f = (result.info or {}).get(key)
        if callable(f) and not inspect.isclass(f):
            return f
    return None


def scaled(edit: Edit, alpha: float) -> Edit:
    """``a + α·(f(a) − a)``: an edit's strength, as for vectors (α = 0 no steering, 1 the edit itself,
    more extrapolates). The same rule the trained adaptors' own operator applies."""
    alpha = float(alpha)
    if alpha == 1.0:
        return edit
    return lambda a: a + alpha * (edit(a) - a)


def edit_from_fit(result: FitResult, space: ActivationSpace, layer: int, alpha: float = 1.0) -> Edit:
    """Turn a registry fit result into an :data:`Edit`.

    * A result that carries a callable edit (an attribute or ``info`` entry named ``edit``,
      ``adaptor``, ``intervention`` or ``module``, e.g. the ``FitResult.adaptor`` of LoReFT and LoReST) is applied as
      ``a + α·(f(a) − a)``: exactly ``f`` at α = 1, interpolated otherwise.
    * Otherwise the result's direction is applied with its operator through the operator
      registry, so ACE sets the component and addition adds α·v, exactly as in a language model.
    """
    f = _callable_edit(result)
    if f is not None:
        return scaled(f, alpha)
    try:
        op = get_operator(result.operator)
        ref = result.reference if op.needs_reference else None
        term = operator_term(space, result.operator, layer, result.direction, alpha, reference=ref)
    except SteeringCoreError as e:
        raise ToyWorldError(f"{result.method}: cannot apply its {result.operator!r} operator to the toy MLP: {e}") from e

    def edit(a: torch.Tensor) -> torch.Tensor:
        return term.edit(a.unsqueeze(1), term.delta).squeeze(1)

    return edit


def fit_edit(method: str | EditMethod, pos: torch.Tensor, neg: torch.Tensor, space: ActivationSpace, layer: int,
             alpha: float = 1.0, ctx: FitContext | None = None) -> FittedEdit:
    """Fit ``method`` on paired activations ``[pairs, d]`` and return its edit at ``layer``.
    Registry methods raise the registry's FitError on unusable input (too few pairs …)."""
    if isinstance(method, EditMethod):
        if pos.shape[0] < method.min_pairs:
            raise ToyWorldError(f"{method.name} needs at least {method.min_pairs} pairs; it was given {pos.shape[0]}.")
        return FittedEdit(method.name, method.fit(pos, neg))
    res = fit(method, pos, neg, ctx or FitContext())
    return FittedEdit(method, edit_from_fit(res, space, layer, alpha), res)


__all__ = ["EDIT_KEYS", "ActivationSpace", "Edit", "EditMethod", "FittedEdit", "edit_from_fit", "fit_edit",
           "method_name", "min_pairs", "resolve_methods", "scaled", "steering_methods"]
