"""What every fitting method shares: the context it reads, the result it returns, its registry
entry and the scale helpers (docs/design.md §Vector methods). The methods themselves are in
:mod:`steering_core.vectors.methods` (activation methods, the registry's order, ``fit``) and
:mod:`steering_core.vectors.sae_methods` (the methods that read an SAE)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from steering_core.errors import SteeringCoreError

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE


class FitError(SteeringCoreError):
    """A method that cannot fit on what it was given (too few pairs, no SAE, degenerate data)."""


@dataclass
class FitContext:
    """What methods beyond plain activations need. Unused fields stay None."""

    sae: object | None = None  # a LoadedSAE (encode / decode / W_dec)
    approximator: object | None = None  # steering_core.measure.approximator.Approximator
    feature_weights: dict[int, float] | None = None  # hand-picked features (sae_combo, SAE-TS targets)
    top_features: int = 8  # features kept by the data-driven SAE methods
    probe_l2: float = 1.0  # inverse regularisation strength C of the logistic probe
    saets_lambda: float = 1.0
    # trained methods (vectors/trained/): their config (None = defaults), progress and stop flag
    training: object | None = None  # LoreftConfig, LorestConfig or BipoConfig
    on_progress: Callable[[int, int], None] | None = None  # (steps done, steps in all)
    stop: object | None = None  # threading.Event or callable returning True; read before every step
    # methods that train through the model (needs_model: BiPO) read the pairs' texts, not activations
    model: object | None = None  # SteerableModel
    layer: int | None = None
    texts: tuple[list[str], list[str]] | None = None  # (positives, negatives)


@dataclass
class FitResult:
    """A fitted vector. ``reference`` is ACE's a₀ (None for additive methods). A trained adaptor
    (LoReFT, LoReST) also sets ``adaptor`` (callable: a ↦ f(a)) and an ``operator`` bound to it;
    its ``direction`` is then its mean edit on the negatives, a summary for norms and plots."""

    method: str
    direction: torch.Tensor  # [d_model], float32
    operator: str = "add"
    reference: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    adaptor: object | None = None  # steering_core.vectors.trained.adaptor.Adaptor

    @property
    def norm(self) -> float:
        return float(self.direction.norm())


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    fn: Callable[[torch.Tensor, torch.Tensor, FitContext], FitResult]
    min_pairs: int = 1
    needs_sae: bool = False
    needs_approximator: bool = False
    needs_features: bool = False  # hand-picked feature weights required
    uses_pairs: bool = True  # False: the vector comes from features alone, the dataset is not read
    features_suffice: bool = False  # hand-picked target features replace the dataset
    ranks_features: bool = False  # picks the dataset's FitContext.top_features most raised SAE features
    needs_model: bool = False  # trains through the model on the pairs' texts (FitContext model/layer/texts)
    trained: bool = False  # an optimisation loop: honours FitContext training, on_progress and stop
    produces: str = "vector"  # "vector", or "adaptor": a parametrised edit applied by its own operator
    about: str = ""

    @property
    def takes_features(self) -> bool:
        """Whether hand-picked feature weights (FitContext.feature_weights) mean anything to it."""
        return self.needs_features or self.features_suffice


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (the pages list whatever is registered)."""
    METHODS[method.name] = method
    return method


# -- helpers -------------------------------------------------------------------------------------


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp(min=1e-12)


def method_label(method: str) -> str:
    """The name a person reads ("Hand-picked SAE features", not "sae_combo") for a message."""
    from steering_core.vectors.methods import METHODS  # imported late: the registry imports this module

    return METHODS[method].label if method in METHODS else method


def _mean_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return (pos.float() - neg.float()).mean(0)


def _scaled(direction: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, method: str,
            info: dict | None = None) -> FitResult:
    """Orient a direction so positives project higher and scale it to the mean gap along it."""
    u = _unit(direction.float())
    gap = float(_mean_diff(pos, neg) @ u) if pos.shape[0] else 0.0
    if gap < 0:
        u, gap = -u, -gap
    warnings = []
    if not gap > 1e-8:
        warnings.append(f"{method_label(method)}: positives do not project higher than negatives along this direction; "
                        "returned unit-norm.")
        gap = 1.0
    return FitResult(method, u * gap, info=dict(info or {}, gap=gap), warnings=warnings)


def feature_difference(sae: LoadedSAE, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean SAE feature activation of positives minus negatives ``[d_sae]`` ([SAE-Gender])."""
    return (sae.encode(pos.float()).float() - sae.encode(neg.float()).float()).mean(0)
