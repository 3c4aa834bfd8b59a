"""Steering vectors as first-class objects: a direction plus everything needed to apply it.

Why objects and not bare tensors: a direction is only meaningful together with the block it was
extracted at, the operator it is applied with (plain addition, ACE with its reference point, or
any other operator of :mod:`steering_core.model.operators`), and where it came from (method,
dataset, model). Passing tensors around loses that, and a vector applied at the wrong layer or
to the wrong model silently does something else. A :class:`SteeringVector` keeps them together
through arithmetic (``a + b``, ``2 * a``, :func:`combine`), files
(:mod:`~steering_core.vectors.safetensors_format`, :mod:`~steering_core.vectors.gguf_format`)
and the library (:mod:`~steering_core.vectors.store`).

Layer convention: ``layer`` is the 0-based index of the block whose *output* is steered
(TransformerLens ``blocks.{layer}.hook_resid_post``, HF ``hidden_states[layer + 1]``), the same
convention as :class:`steering_core.model.steering.SteeringTerm`.

Every bad input raises :class:`VectorError` with one sentence saying what is wrong.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringError, VectorError
from steering_core.model.operators import Operator, get_operator, operator_names, operator_term
from steering_core.model.steering import SteeringTerm
from steering_core.names import MAX_NAME_CHARS, unencodable_at
from steering_core.vectors.uploads import first_line

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


def clean_vector_name(name: Any, what: str = "vector") -> str:
    """The shared naming rule (:func:`steering_core.names.clean_name`), raised as a VectorError."""
    from steering_core.names import InvalidNameError, clean_name

    try:
        return clean_name(name, what)
    except InvalidNameError as exc:
        raise VectorError(str(exc)) from None


def vector_operator(name: str) -> Operator:
    """The registered operator called ``name``, or a VectorError listing the known ones."""
    try:
        return get_operator(name)
    except SteeringError as exc:
        raise VectorError(str(exc)) from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_encodable(text: str, what: str) -> None:
    """Text that cannot be written as UTF-8 (a lone surrogate, e.g. from a broken copy-paste)
    would fail half-way through a save; refuse it up front."""
    at = unencodable_at(text)
    if at is not None:
        raise VectorError(f"The vector's {what} holds a character that cannot be stored as UTF-8 "
                          f"(position {at}: {text[at]!r}).")


def _as_vector_tensor(x: Any, what: str) -> torch.Tensor:
    """A finite float32 ``[d]`` CPU copy of ``x``, or a VectorError saying what is wrong."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise VectorError(f"The {what} has dtype {x.dtype}; steering vectors hold floating-point numbers.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise VectorError(f"The {what} must be a tensor, not {type(x).__name__}.")
    if not x.is_floating_point():
        raise VectorError(f"The {what} has dtype {x.dtype}; steering vectors hold floating-point numbers, "
                          "not integers, booleans or complex values.")
    if x.dim() != 1:
        raise VectorError(f"The {what} has shape {tuple(x.shape)}; a steering vector is one-dimensional, [d_model].")
    if x.numel() == 0:
        raise VectorError(f"The {what} is empty.")
    t = x.detach().to("cpu", torch.float32, copy=True).contiguous()
    if not torch.isfinite(t).all():
        raise VectorError(f"The {what} contains NaN or infinite values.")
    return t


def _as_scalar(x: Any) -> float | None:
    """``x`` as a float when it is a real number (``None`` when it is not one at all)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, torch.Tensor):
        if x.numel() != 1 or not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            return None
        return float(x)
    if isinstance(x, numbers.Real):
        return float(x)
    return None


def _fmt(w: float) -> str:
    return f"{w:g}"


@dataclass(eq=False)
class SteeringVector:
    """A direction together with everything needed to apply it correctly.

    ``layer`` is the 0-based block whose output is steered (``blocks.{layer}.hook_resid_post``);
    ``direction`` a finite float32 ``[d_model]`` tensor; ``operator`` the name of a registered
    operator (:mod:`steering_core.model.operators`): ``"add"`` (α·v is added), ``"ace"`` (affine
    concept editing), ...; operators that need one take ``reference``, the point a₀ (for ACE,
    the level that α = 0 restores). ``method``/``dataset``/``model_id`` say where it came from,
    ``meta`` holds any further JSON-serialisable facts. Arithmetic (``a + b``, ``a - b``, ``-a``, ``2 * a``,
    ``a / 2``, :func:`combine`) returns new vectors recording their formula in ``meta``.
    """

    name: str
    layer: int
    direction: torch.Tensor  # [d_model] float32
    method: str = "manual"
    dataset: str = ""
    model_id: str = ""
    created: str = field(default_factory=_now)  # ISO date-time, UTC
    meta: dict = field(default_factory=dict)
    operator: str = "add"  # a name in steering_core.model.operators
    reference: torch.Tensor | None = None  # reference point a0 [d_model], for operators that need one (ACE)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise VectorError("A steering vector needs a name (non-empty text).")
        for attr in ("method", "dataset", "model_id", "created"):  # (the name is checked when saved)
            if not isinstance(getattr(self, attr), str):
                raise VectorError(f"{attr} must be text, not {type(getattr(self, attr)).__name__}.")
            _check_encodable(getattr(self, attr), attr)
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)):
            raise VectorError(f"layer must be a whole number (the block whose output is steered), not {self.layer!r}.")
        if self.layer < 0:
            raise VectorError(f"layer must be 0 or more (blocks are counted from 0), not {self.layer}.")
        self.layer = int(self.layer)
        op = self.operator_spec
        self.direction = _as_vector_tensor(self.direction, "direction")
        if op.needs_reference:
            if self.reference is None:
                raise VectorError(f"{op.article.capitalize()} {op.label} vector needs its reference point a0 "
                                  "(the activation level that alpha = 0 restores).")
            self.reference = _as_vector_tensor(self.reference, f"{op.label} reference")
            if self.reference.shape != self.direction.shape:
                raise VectorError(f"The {op.label} reference has length {self.reference.shape[0]}, but the direction "
                                  f"has length {self.direction.shape[0]}; both must be [d_model].")
        elif self.reference is not None:
            takers = [get_operator(n).label for n in operator_names() if get_operator(n).needs_reference]
            raise VectorError(f"Only {' and '.join(takers) or 'some'} vectors have a reference point; this vector's "
                              f"operator is {self.operator!r}.")
        problem = op.check(self.direction, self.reference) if op.check is not None else None
        if problem:
            raise VectorError(problem)
        if not isinstance(self.meta, dict):
            raise VectorError(f"meta must be a dict, not {type(self.meta).__name__}.")
        try:
            text = json.dumps(self.meta, allow_nan=False)
            self.meta = json.loads(text)  # a private, JSON-exact copy
        except (TypeError, ValueError) as exc:
            raise VectorError(f"meta must hold only JSON values (text, finite numbers, lists, dicts): {first_line(exc)}.") from None
        except RecursionError:
            raise VectorError("meta is nested too deeply to be saved.") from None
        _check_encodable(json.dumps(self.meta, ensure_ascii=False), "meta")

    # -- views -----------------------------------------------------------------------------------
    @property
    def operator_spec(self) -> Operator:
        """The registered operator this vector is applied with (what it needs, whether it adds)."""
        return vector_operator(self.operator)

    @property
    def norm(self) -> float:
        """Euclidean length of the direction (computed in float64, so it cannot overflow)."""
        return float(torch.linalg.vector_norm(self.direction.double()))

    @property
    def d_model(self) -> int:
        return int(self.direction.shape[0])

    def unit(self) -> torch.Tensor:
        """The direction scaled to length 1 (a new float32 tensor)."""
        n = self.norm
        if n == 0.0:
            raise VectorError(f"{self.name!r} is all zeros, so it has no direction to normalise.")
        return (self.direction.double() / n).float()

    def term(self, model: SteerableModel, alpha=1.0, active=None) -> SteeringTerm:
        """A validated steering term for ``model``, built by this vector's operator.

        The one place a vector's operator is turned into a term, so callers never branch on its
        name. ``alpha`` is a number or one per batch row; ``active`` (optional ``[batch]`` bools)
        leaves the rows where it is False untouched (the unsteered half of a side-by-side batch).
        """
        return operator_term(model, self.operator, self.layer, self.direction, alpha,
                             reference=self.reference, active=active)

    def __repr__(self) -> str:
        return (f"SteeringVector(name={self.name!r}, layer={self.layer}, d_model={self.d_model}, norm={self.norm:.4g}, "
                f"method={self.method!r}, operator={self.operator!r})")

    # -- arithmetic ------------------------------------------------------------------------------
    def __add__(self, other: Any) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return _linear([(self, 1.0), (other, 1.0)], f"{self.name} plus {other.name}",
                       f"{_operand(self)} + {_operand(other)}")

    def __sub__(self, other: Any) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return _linear([(self, 1.0), (other, -1.0)], f"{self.name} minus {other.name}",
                       f"{_operand(self)} - {_operand(other)}")

    def __neg__(self) -> "SteeringVector":
        return _linear([(self, -1.0)], f"minus {self.name}", f"-{_operand(self)}")

    def __mul__(self, k: Any) -> "SteeringVector":
        s = _as_scalar(k)
        if s is None:
            return NotImplemented
        return _linear([(self, s)], f"{_fmt(s)} x {self.name}", f"{_fmt(s)} * {_operand(self)}")

    __rmul__ = __mul__

    def __truediv__(self, k: Any) -> "SteeringVector":
        s = _as_scalar(k)
        if s is None:
            return NotImplemented
        if s == 0.0:
            raise VectorError(f"Cannot divide {self.name!r} by zero.")
        return _linear([(self, s)], f"{self.name} over {_fmt(s)}", f"{_operand(self)} / {_fmt(s)}", divide=True)


def _operand(v: SteeringVector) -> str:
    formula = v.meta.get("formula") if v.method == "arithmetic" else None
    return f"({formula})" if isinstance(formula, str) and formula else v.name


def _fit_name(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS].rstrip()


def _linear(terms: Sequence[tuple[Any, Any]], name: str, formula: str, divide: bool = False) -> SteeringVector:
    """Σ wᵢ·vᵢ (or v / w when ``divide``) as a new vector, after checking the vectors can be mixed."""
    if not terms:
        raise VectorError("Nothing to combine: give at least one (vector, weight) pair.")
    vecs: list[SteeringVector] = []
    weights: list[float] = []
    for item in terms:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise VectorError(f"combine() takes (vector, weight) pairs, not {item!r}.")
        v, w = item
        if not isinstance(v, SteeringVector):
            raise VectorError(f"combine() needs SteeringVector objects, not {type(v).__name__}.")
        s = _as_scalar(w)
        if s is None or not math.isfinite(s):
            raise VectorError(f"The weight for {v.name!r} must be a finite number, not {w!r}.")
        op = v.operator_spec
        if not op.additive:
            raise VectorError(f"{v.name!r} is {op.article} {op.label} vector and cannot be used in arithmetic: "
                              f"{op.label} {op.about}, so sums and multiples of {op.label} vectors have no meaning.")
        vecs.append(v)
        weights.append(s)
    first = vecs[0]
    for v in vecs[1:]:
        if v.layer != first.layer:
            raise VectorError(f"Cannot combine {first.name!r} (layer {first.layer}) with {v.name!r} (layer {v.layer}): "
                              "vectors steering different blocks' outputs have no common layer.")
        if v.d_model != first.d_model:
            raise VectorError(f"Cannot combine {first.name!r} (length {first.d_model}) with {v.name!r} "
                              f"(length {v.d_model}): they come from models of different widths.")
    if divide:
        acc = vecs[0].direction.double() / weights[0]
        weights = [1.0 / weights[0]]
    else:
        acc = torch.zeros(first.d_model, dtype=torch.float64)
        for v, w in zip(vecs, weights):
            acc = acc + w * v.direction.double()
    direction = acc.float()
    if not torch.isfinite(direction).all():
        raise VectorError(f"{formula} overflows float32 (values beyond ±3.4e38).")
    model_ids = {v.model_id for v in vecs}
    datasets = {v.dataset for v in vecs}
    return SteeringVector(
        name=_fit_name(name), layer=first.layer, direction=direction, method="arithmetic",
        dataset=datasets.pop() if len(datasets) == 1 else "",
        model_id=model_ids.pop() if len(model_ids) == 1 else "",
        meta={"formula": formula,
              "terms": [{"name": v.name, "weight": w, "method": v.method, "created": v.created}
                        for v, w in zip(vecs, weights)]},
    )


def combine(terms: Iterable[tuple[SteeringVector, float]], name: str | None = None) -> SteeringVector:
    """Weighted sum Σ wᵢ·vᵢ of same-layer, same-width additive vectors, e.g.
    ``combine([(happy, 1.0), (calm, 0.5)], "happy and calm")``. ``meta`` records the formula."""
    terms = list(terms)
    parts = []
    for item in terms:
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], SteeringVector):
            s = _as_scalar(item[1])
            parts.append((item[0], s if s is not None else float("nan")))
    auto = " plus ".join(f"{_fmt(w)} x {v.name}" for v, w in parts)
    formula = " + ".join(f"{_fmt(w)} * {_operand(v)}" for v, w in parts)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise VectorError("The combined vector's name must be non-empty text.")
    return _linear(terms, name.strip() if name is not None else auto, formula)


__all__ = ["SteeringVector", "VectorError", "clean_vector_name", "combine", "vector_operator"]
