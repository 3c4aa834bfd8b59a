"""BiPO: a steering vector trained by bi-directional preference optimisation ([Cao 2024]; document
003 lists it among the trained alternatives to CAA).

Why train through the model: CAA reads a direction off activations and hopes that adding it
changes what the model *writes*. BiPO optimises the vector for exactly that, with a DPO-style
objective on completion pairs: adding +v should make the preferred completion more likely than
the other relative to the unsteered model, and adding −v the reverse. Each pair draws a random
sign d ∈ {−1, +1} (the original's random ±1 multiplier) and the loss is

    −log σ( d·β·[ (log π_{+dv}(c) − log π(c)) − (log π_{+dv}(r) − log π(r)) ] )

for the chosen completion c and the rejected one r, π the unsteered model. Training on both
signs is what makes −v a usable opposite, as for CAA. Drawing the sign per pair rather than per
step has the same expectation and a smaller variance.

Completions come from the project's contrastive pairs: the pair's longest common token prefix is
the prompt, the positive's remaining tokens the preferred completion and the negative's the
dispreferred one (template pairs differ in a word, story pairs in their ending). Steering follows
the project's rule: v is added after block ``layer`` at every position, prompt included.

The result is an ordinary additive vector (α = 1 is the trained vector), so it saves, exports to
GGUF, sweeps and combines like CAA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from steering_core.model.steering import Steering, SteeringTerm, steer
from steering_core.vectors.methods import METHODS, FitContext, FitResult
from steering_core.vectors.trained.loop import Progress, Stop, TrainConfig, TrainingError, run_steps

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


@dataclass(frozen=True)
class BipoConfig(TrainConfig):
    """BiPO training: DPO temperature ``beta``, pairs per step ``batch_size``; ``lr`` is in units
    of the residual stream's typical coordinate size at the layer (see :func:`train_bipo`)."""

    steps: int = 200
    lr: float = 2e-2
    beta: float = 0.1
    batch_size: int = 8


@dataclass(frozen=True)
class PreferencePair:
    """Token ids of the chosen and rejected texts (prompt included) and, for each, the index of
    its first completion token: log-likelihoods are summed from there on."""

    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    chosen_from: int
    rejected_from: int


@dataclass(frozen=True)
class BipoResult:
    """A trained BiPO vector ``[d_model]`` (float32, CPU) with its training record. ``objective_*``
    is the loss averaged over both signs on every training pair, before and after training."""

    vector: torch.Tensor
    losses: list[float]
    objective_before: float
    objective_after: float
    config: dict = field(default_factory=dict)


def preference_pairs(model: SteerableModel, positives: Sequence[str], negatives: Sequence[str]) -> list[PreferencePair]:
    """Split each pair at its longest common token prefix (see the module docstring). A pair one
    side of which ends where the other goes on has no completion of its own: refused by number."""
    from steering_core.vectors.extraction import _common_prefix, _token_lists

    positives, negatives = list(positives), list(negatives)
    if len(positives) != len(negatives):
        raise TrainingError(f"BiPO got {len(positives)} positive texts but {len(negatives)} negative ones.")
    out = []
    for k, (c, r) in enumerate(zip(_token_lists(model, positives), _token_lists(model, negatives))):
        start = max(1, _common_prefix(c, r))  # the first token has no context to be predicted from
        if len(c) <= start or len(r) <= start:
            raise TrainingError(f"Pair {k + 1}: one text is the other's beginning, so one side has no completion of "
                                "its own; BiPO needs pairs that continue differently.")
        out.append(PreferencePair(tuple(c), tuple(r), start, start))
    return out


def _padded(model: SteerableModel, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(model.device), mask.to(model.device)


def completion_logprobs(model: SteerableModel, seqs: Sequence[Sequence[int]], starts: Sequence[int],
                        steering: Steering | None = None) -> torch.Tensor:
    """Σ log p(token | earlier tokens) over each sequence's tokens from ``starts[i]`` on, ``[n]``,
    with gradients when ``steering`` carries a trainable vector."""
    ids, mask = _padded(model, seqs)
    with steer(model, steering):
        logits = model.backend.forward(ids, mask)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    width = ids.shape[1]
    pos = torch.arange(1, width, device=ids.device).unsqueeze(0)  # position of each predicted token
    first = torch.tensor([width - len(s) + k for s, k in zip(seqs, starts)], device=ids.device).unsqueeze(1)
    return (logp * (pos >= first)).sum(-1)


def bipo_loss(logp_c: torch.Tensor, logp_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
              sign: torch.Tensor, beta: float) -> torch.Tensor:
    """The bi-directional preference loss (module docstring), averaged over pairs."""
    margin = (logp_c - ref_c) - (logp_r - ref_r)
    return -F.logsigmoid(sign * beta * margin).mean()


def _signed_term(model: SteerableModel, layer: int, vector: torch.Tensor, signs: torch.Tensor) -> Steering:
    """α = ±1 per row times a vector that may carry gradients (built directly: make_term detaches)."""
    return Steering.of([SteeringTerm(layer=layer, vector=vector.to(model.device, model.dtype),
                                     alpha=signs.to(model.device, model.dtype))])


def _logps(model: SteerableModel, layer: int, pairs: Sequence[PreferencePair], vector: torch.Tensor | None,
           signs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected log-likelihoods of ``pairs`` in one batch, steered by sign·vector per pair."""
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    starts = [p.chosen_from for p in pairs] + [p.rejected_from for p in pairs]
    st = None if vector is None else _signed_term(model, layer, vector, torch.cat([signs, signs]))
    lp = completion_logprobs(model, seqs, starts, st)
    return lp[:len(pairs)], lp[len(pairs):]


def bipo_objective(model: SteerableModel, layer: int, pairs: Sequence[PreferencePair], vector: torch.Tensor,
                   beta: float = 0.1, batch_size: int = 16) -> float:
    """The BiPO loss averaged over both signs and every pair (no sampling): what training lowers."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            chunk = list(pairs[i:i + batch_size])
            ref_c, ref_r = _logps(model, layer, chunk, None, None)
            for s in (1.0, -1.0):
                sign = torch.full((len(chunk),), s)
                c, r = _logps(model, layer, chunk, vector, sign)
                total += float(bipo_loss(c, r, ref_c, ref_r, sign.to(c.device), beta)) * len(chunk) / 2
    return total / len(pairs)


def _check(model: SteerableModel, layer, config: BipoConfig) -> None:
    config.check("BiPO")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.n_layers:
        raise TrainingError(f"BiPO: layer {layer!r} does not exist; {model.name} has layers 0 to {model.n_layers - 1}.")
    if isinstance(config.beta, bool) or not isinstance(config.beta, (int, float)) or not (
            math.isfinite(config.beta) and config.beta > 0):
        raise TrainingError(f"BiPO: beta must be a finite number above 0, not {config.beta!r}.")
    if isinstance(config.batch_size, bool) or not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise TrainingError(f"BiPO: batch_size must be a whole number of at least 1, not {config.batch_size!r}.")


def train_bipo(model: SteerableModel, layer: int, positives: Sequence[str], negatives: Sequence[str],
               config: BipoConfig | None = None, on_progress: Progress = None, stop: Stop = None) -> BipoResult:
    """Train a BiPO vector at ``layer`` preferring each positive text's completion over its
    negative's. The vector is s·u with u trained from zero and s the residual stream's typical
    coordinate size at ``layer`` (mean residual norm / √d_model), so ``lr`` means the same on any model."""
    config = config or BipoConfig()
    _check(model, layer, config)
    need = METHODS["bipo"].min_pairs
    if len(positives) < need:
        raise TrainingError(f"BiPO needs at least {need} pairs to train; this dataset has {len(positives)}.")
    pairs = preference_pairs(model, positives, negatives)
    scale = model.residual_norms()[layer] / math.sqrt(model.d_model)
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    gen = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        refs = [_logps(model, layer, pairs[i:i + 16], None, None) for i in range(0, len(pairs), 16)]
    ref_c = torch.cat([c for c, _ in refs])
    ref_r = torch.cat([r for _, r in refs])
    u = torch.zeros(model.d_model, requires_grad=True)
    before = bipo_objective(model, layer, pairs, torch.zeros(model.d_model), config.beta)

    def loss_at(_step: int) -> torch.Tensor:
        idx = torch.randperm(len(pairs), generator=gen)[:config.batch_size]
        sign = torch.randint(0, 2, (len(idx),), generator=gen).float() * 2 - 1
        c, r = _logps(model, layer, [pairs[int(i)] for i in idx], scale * u, sign)
        return bipo_loss(c, r, ref_c[idx], ref_r[idx], sign.to(c.device), config.beta)

    losses = run_steps([u], loss_at, config, "BiPO", on_progress, stop)
    vector = (scale * u).detach().float().cpu()
    after = bipo_objective(model, layer, pairs, vector, config.beta)
    facts = dict(asdict(config), scale=scale, pairs=len(pairs), layer=layer)
    return BipoResult(vector, losses, before, after, facts)


def fit_bipo(pos: torch.Tensor | None, neg: torch.Tensor | None, ctx: FitContext) -> FitResult:
    """Registry entry: BiPO trains through ``ctx.model`` at ``ctx.layer`` on ``ctx.texts``
    (positives, negatives); the activations, when given, are not needed."""
    if ctx.model is None or ctx.layer is None or ctx.texts is None:
        raise TrainingError("BiPO trains through the model: it needs the model, the layer and the pairs' texts "
                            "(FitContext model=, layer=, texts=), not activations alone.")
    config = ctx.training if ctx.training is not None else BipoConfig()
    if not isinstance(config, BipoConfig):
        raise TrainingError(f"BiPO takes a BipoConfig, not {type(config).__name__}.")
    positives, negatives = ctx.texts
    if pos is not None and pos.numel() and pos.shape[0] != len(positives):
        raise TrainingError(f"BiPO was given activations of {pos.shape[0]} pairs but the texts of {len(positives)}; "
                            "they must be the same pairs.")
    res = train_bipo(ctx.model, ctx.layer, positives, negatives, config, ctx.on_progress, ctx.stop)
    info = {k: v for k, v in res.config.items() if isinstance(v, (int, float, str))}
    info.update(produces="vector", loss_start=res.losses[0], loss=res.losses[-1],
                objective_before=res.objective_before, objective_after=res.objective_after, gap=float(res.vector.norm()))
    warnings = []
    if not res.objective_after < res.objective_before:
        warnings.append(f"BiPO did not lower its objective ({res.objective_before:.4g} before, "
                        f"{res.objective_after:.4g} after): more steps, a larger learning rate or more pairs may help.")
    return FitResult("bipo", res.vector, info=info, warnings=warnings)


__all__ = ["BipoConfig", "BipoResult", "PreferencePair", "bipo_loss", "bipo_objective", "completion_logprobs",
           "fit_bipo", "preference_pairs", "train_bipo"]
