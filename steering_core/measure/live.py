"""The live Steer view as a library call: steered and unsteered completions side by side.

Both halves run in **one batch** with the same per-sample seeds (row j of each half samples with
``seed + j``): the unsteered rows carry α = 0 and are masked out of every term (an operator such
as ACE edits even at α = 0), so they are bit-for-bit unsteered and the only difference between a
pair of completions is the vector. Vectors of any registered operator
(:mod:`steering_core.model.operators`) are applied through :func:`operator_term`; nothing here
branches on an operator's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import torch

from steering_core.errors import SteeringError
from steering_core.model.generation import GenerationConfig, stream
from steering_core.model.operators import get_operator, implied_operator, operator_term
from steering_core.model.steering import Steering, check_alpha, random_unit_vector
from steering_core.vectors.uploads import check_vector, read_vector_bytes

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel

MAX_SAMPLES = 16


@dataclass(frozen=True)
class ResolvedVector:
    """A steering direction ready to use, with what the UI should say about it."""

    vector: torch.Tensor  # [d_model]
    description: str
    original_norm: float
    suggested_layer: int | None = None
    reference: torch.Tensor | None = None  # a₀, for operators that need one (ACE)
    operator: str = "add"  # a name in steering_core.model.operators

    @property
    def additive(self) -> bool:
        """α·v is added (so automatic α and sweeps around it apply); False for ACE and the like."""
        return get_operator(self.operator).additive


def random_direction(model: SteerableModel, seed: int) -> ResolvedVector:
    v = random_unit_vector(model.d_model, int(seed))
    return ResolvedVector(v, f"random unit vector (seed {int(seed)})", 1.0)


def sae_direction(model: SteerableModel, sae: LoadedSAE, feature_id) -> ResolvedVector:
    if sae is None:
        raise SteeringError("No SAE is loaded: pick one on the home page, or use another vector source.")
    fid = sae.check_feature(feature_id)
    raw = sae.decoder_direction(fid, normalize=False)
    return ResolvedVector(raw / raw.norm().clamp_min(1e-12), f"SAE feature {fid} decoder row",
                          float(raw.norm()), suggested_layer=sae.layer)


def uploaded_direction(model: SteerableModel, data: bytes, filename: str, normalize: bool = True) -> ResolvedVector:
    v = read_vector_bytes(data, filename, d_model=model.d_model)
    if v.dim() != 1:
        raise SteeringError(f"{filename} holds {v.shape[0]} vectors; upload a single vector.")
    norm = float(v.norm())
    if normalize:
        if norm == 0:
            raise SteeringError(f"{filename} is the zero vector; it has no direction to steer along.")
        v = v / norm
    return ResolvedVector(v, f"uploaded {filename}" + (" (normalised)" if normalize else ""), norm)


def saved_direction(model: SteerableModel, store, name: str) -> ResolvedVector:
    """A vector from the user's library as a unit direction (α in residual-stream units, like
    every other source); its own norm is reported, since α = that norm reproduces the dataset's
    mean gap for fitted vectors."""
    vec = store.load(name)
    if vec.d_model != model.d_model:
        raise SteeringError(f"{name} has {vec.d_model} dimensions but {model.name} has d_model {model.d_model}: "
                            "it was fitted on another model.")
    norm = vec.norm
    op = vec.operator_spec
    kind = vec.method if op.additive else f"{op.label}, {op.about}"
    return ResolvedVector(vec.unit(), f"saved vector {name} ({kind}, block {vec.layer})", norm,
                          suggested_layer=vec.layer if vec.layer < model.n_layers else None,
                          reference=vec.reference, operator=vec.operator)


@dataclass(frozen=True)
class ExtraVector:
    """One more vector applied together with the main one (steered column only)."""

    layer: int
    vector: torch.Tensor
    alpha: float
    reference: torch.Tensor | None = None
    operator: str | None = None  # None: addition, or ACE when a reference is given


@dataclass(frozen=True)
class SideBySide:
    prompt: str
    layer: int
    vector: torch.Tensor
    alpha: float
    chat: bool = True
    n_samples: int = 2
    config: GenerationConfig = GenerationConfig(max_new_tokens=48, temperature=0.8, top_k=50)
    reference: torch.Tensor | None = None  # a₀, for operators that need one (ACE then *sets* the component)
    operator: str | None = None  # a name in steering_core.model.operators; None: implied by ``reference``
    extra: tuple[ExtraVector, ...] = ()  # several vectors at once, each with its own α
    # multi-turn chat: earlier (user, assistant) turns of each column (they differ: each column
    # keeps its own replies); ``prompt`` is the new user message
    history_unsteered: tuple[tuple[str, str], ...] = ()
    history_steered: tuple[tuple[str, str], ...] = ()


@dataclass
class SideBySideUpdate:
    step: int
    unsteered: list[str]
    steered: list[str]
    done: bool
    notes: list[str] = field(default_factory=list)
    formatted_prompt: str = ""


def side_by_side(model: SteerableModel, request: SideBySide) -> Iterator[SideBySideUpdate]:
    """Stream both columns together; validation errors are raised before any token is made."""
    n = request.n_samples
    if not isinstance(n, int) or n < 1:
        raise SteeringError(f"Number of samples must be at least 1, got {n!r}.")
    notes: list[str] = []
    if n > MAX_SAMPLES:
        notes.append(f"{n} samples clamped to {MAX_SAMPLES}.")
        n = MAX_SAMPLES
    vec = check_vector(torch.as_tensor(request.vector), model.d_model)
    prompt = model.format_prompt(request.prompt, chat=request.chat) if request.prompt.strip() else request.prompt
    prompts = [prompt] * (2 * n)
    if request.history_unsteered or request.history_steered:
        if not request.prompt.strip():
            raise SteeringError("Type a message to continue the conversation.")
        pu = model.format_conversation([*request.history_unsteered, (request.prompt, None)])
        ps = model.format_conversation([*request.history_steered, (request.prompt, None)])
        prompts, prompt = [pu] * n + [ps] * n, ps
    alpha = check_alpha(request.alpha)
    if not isinstance(alpha, float):
        raise SteeringError("alpha must be one number for the Steer view.")
    steered = [False] * n + [True] * n  # operators like ACE edit even at α = 0: mask the unsteered half
    terms = [operator_term(model, request.operator or implied_operator(request.reference), request.layer, vec,
                           torch.tensor([0.0] * n + [alpha] * n), reference=request.reference, active=steered)]
    for e in request.extra:
        ev = check_vector(torch.as_tensor(e.vector), model.d_model)
        ea = check_alpha(e.alpha)
        if not isinstance(ea, float):
            raise SteeringError("Each extra vector needs one α.")
        terms.append(operator_term(model, e.operator or implied_operator(e.reference), e.layer, ev,
                                   torch.tensor([0.0] * n + [ea] * n), reference=e.reference, active=steered))
    seeds = [request.config.seed + j for j in range(n)] * 2
    for ev in stream(model, prompts, request.config, Steering.of(terms), row_seeds=seeds, notes=notes):
        done = all(ev.finished)
        yield SideBySideUpdate(ev.step, ev.texts[:n], ev.texts[n:], done, list(notes), prompt)
