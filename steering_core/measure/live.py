"""The live Steer view as a library call: steered and unsteered completions side by side.

Both halves run in **one batch** with the same per-sample seeds (row j of each half samples with
``row_seed(seed, j)``, the default seeds of a plain generation): the unsteered rows carry α = 0 and are masked out of every term (an operator such
as ACE edits even at α = 0), so they are bit-for-bit unsteered and the only difference between a
pair of completions is the vector. Vectors of any registered operator
(:mod:`steering_core.model.operators`) are applied through :func:`operator_term`; nothing here
branches on an operator's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from steering_core.errors import SteeringError
from steering_core.model.generation import GenerationConfig, stream
from steering_core.model.operators import get_operator, implied_operator, operator_term
from steering_core.model.sampling import row_seeds as default_row_seeds
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


def operator_choices(resolved: ResolvedVector) -> list[str]:
    """The operators a user may apply this direction with: a trained adaptor only with its own;
    otherwise every operator that is not bound to an adaptor, those needing a reference point (ACE)
    only when the vector carries one."""
    from steering_core.model.operators import operator_names

    own = get_operator(resolved.operator)
    if own.bound:
        return [resolved.operator]
    return [n for n in operator_names(include_bound=False)
            if not get_operator(n).needs_reference or resolved.reference is not None]


def with_operator(resolved: ResolvedVector, name: str) -> ResolvedVector:
    """The same direction applied with another operator (one of :func:`operator_choices`). The
    description names the operator when it is not the vector's own, so results shown for one
    operator are never taken for another's."""
    import dataclasses

    if name not in operator_choices(resolved):
        raise SteeringError(f"{resolved.description} cannot be applied with {name!r}; choose one of "
                            f"{', '.join(operator_choices(resolved))}.")
    if name == resolved.operator:
        return resolved
    return dataclasses.replace(resolved, operator=name,
                               description=f"{resolved.description}, {get_operator(name).label}")


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
    # the norm in float64: values near float32's limit (1e38) overflow a float32 norm to inf, and
    # v / inf was a silent zero vector
    norm = float(v.double().norm())
    if norm == 0:
        raise SteeringError(f"{filename} is the zero vector; it has no direction to steer along.")
    if normalize:
        v = (v.double() / norm).to(v.dtype)
    elif not math.isfinite(float(v.float().norm())):
        raise SteeringError(f"{filename} has a norm of {norm:.3g}, beyond what 32-bit arithmetic holds; steering with "
                            "it would fill the residual stream with infinities. Tick 'Normalise to unit norm', or "
                            "rescale it.")
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


def unsteered_key(request: SideBySide) -> tuple:
    """What the unsteered column depends on (everything but the vectors and their α): two requests
    with the same key have the same unsteered texts, so the column can be reused from a cache."""
    c = request.config
    return (request.prompt, request.chat, request.n_samples, c.max_new_tokens, c.temperature, c.top_k, c.top_p,
            c.greedy, c.seed, c.stop_at_eos, request.history_unsteered)


def side_by_side(model: SteerableModel, request: SideBySide,
                 unsteered: list[str] | None = None) -> Iterator[SideBySideUpdate]:
    """Stream both columns together; validation errors are raised before any token is made.

    ``unsteered``: that column's texts from an earlier run with the same :func:`unsteered_key`
    (live α: only the steered rows are generated, with the same row seeds, so they equal the
    steered column of a joint run)."""
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
    if unsteered is not None:
        if len(unsteered) != n:
            raise SteeringError(f"The cached unsteered column has {len(unsteered)} samples, not {n}.")
        yield from _steered_only(model, request, vec, alpha, n, prompts[n:], prompt, list(unsteered), notes)
        return
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
    seeds = default_row_seeds(request.config.seed, n) * 2
    for ev in stream(model, prompts, request.config, Steering.of(terms), row_seeds=seeds, notes=notes):
        done = all(ev.finished)
        yield SideBySideUpdate(ev.step, ev.texts[:n], ev.texts[n:], done, list(notes), prompt)


def _steered_only(model: SteerableModel, request: SideBySide, vec: torch.Tensor, alpha: float, n: int,
                  prompts: list[str], prompt: str, unsteered: list[str], notes: list[str]) -> Iterator[SideBySideUpdate]:
    terms = [operator_term(model, request.operator or implied_operator(request.reference), request.layer, vec,
                           torch.tensor([alpha] * n), reference=request.reference)]
    for e in request.extra:
        ea = check_alpha(e.alpha)
        if not isinstance(ea, float):
            raise SteeringError("Each extra vector needs one α.")
        terms.append(operator_term(model, e.operator or implied_operator(e.reference), e.layer,
                                   check_vector(torch.as_tensor(e.vector), model.d_model), torch.tensor([ea] * n),
                                   reference=e.reference))
    seeds = default_row_seeds(request.config.seed, n)
    for ev in stream(model, prompts, request.config, Steering.of(terms), row_seeds=seeds, notes=notes):
        yield SideBySideUpdate(ev.step, unsteered, ev.texts, all(ev.finished), list(notes), prompt)


@dataclass(frozen=True)
class ShownSettings:
    """The settings that produced a shown Steer result (or would produce the next one): a result
    is always labelled with these, never with whatever the widgets read now. Everything that
    changes the text is here, so no widget can change without the page saying the result is old."""

    alpha: float
    layer: int
    vector: str  # ResolvedVector.description
    seed: int
    prompt: str
    samples: int = 1
    max_tokens: int = 0
    temperature: float = 0.0
    chat: bool = False
    extras: str = ""  # the extra vectors and their α, as the page lists them
    conversation: bool = False  # generated as a turn of a multi-turn chat (after its earlier turns)

    def header(self) -> str:
        return f"Steered (α = {self.alpha:+.1f}, layer {self.layer})"

    def label(self) -> str:
        """The rest of what produced the result, for a caption under :meth:`header`."""
        out = f"{self.vector} · seed {self.seed}"
        if self.max_tokens:
            out += (f" · {self.samples} sample{'s' if self.samples != 1 else ''} × {self.max_tokens} tokens"
                    f" · temperature {self.temperature:g}" + (" · chat template" if self.chat else "")
                    + (" · a turn of the conversation" if self.conversation else ""))
        return out + (f" · with {self.extras}" if self.extras else "")

    def changes(self, now: ShownSettings) -> list[str]:
        """What differs in ``now``, one short phrase each (empty: the shown result is current)."""
        out = []
        for name, phrase in _CHANGE_PHRASES:
            was, is_ = getattr(self, name), getattr(now, name)
            if (f"{was:+.1f}" != f"{is_:+.1f}") if name == "alpha" else was != is_:
                out.append(phrase(was, is_))
        return out

    def live_update(self, now: ShownSettings) -> bool:
        """Whether ``now`` differs from the shown result in α alone: the case the live slider
        answers by regenerating the steered column (everything else waits for Generate)."""
        return self.changes(now) == [f"α {self.alpha:+.1f} → {now.alpha:+.1f}"]

    def stale_note(self, now: ShownSettings) -> str | None:
        """A plain sentence when the widgets no longer match the shown result, else None."""
        changed = self.changes(now)
        if not changed:
            return None
        return (f"Shown: α = {self.alpha:+.1f}, layer {self.layer}, {self.vector}, seed {self.seed}; "
                f"settings changed ({'; '.join(changed)}) — Generate to update.")


#: How each setting's change is said, in the order the page lists them (``ShownSettings.changes``).
_CHANGE_PHRASES: tuple[tuple[str, Callable[[object, object], str]], ...] = (
    ("alpha", lambda a, b: f"α {a:+.1f} → {b:+.1f}"),
    ("layer", lambda a, b: f"layer {a} → {b}"),
    ("vector", lambda a, b: f"vector {a} → {b}"),
    ("seed", lambda a, b: f"seed {a} → {b}"),
    ("prompt", lambda a, b: "prompt edited"),
    ("samples", lambda a, b: f"samples {a} → {b}"),
    ("max_tokens", lambda a, b: f"max new tokens {a} → {b}"),
    ("temperature", lambda a, b: f"temperature {a:g} → {b:g}"),
    ("chat", lambda a, b: f"chat template {'on → off' if a else 'off → on'}"),
    ("extras", lambda a, b: "extra vectors changed"),
    ("conversation", lambda a, b: f"multi-turn chat {'on → off' if a else 'off → on'}"),
)
