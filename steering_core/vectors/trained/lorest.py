"""LoReST: low-rank representation steering ([Krasheninnikov 2024]; [Purchase 2025] eq. 2.4).

    a ← a − (a Q) diag(p) Qᵀ + b,   Q ∈ ℝ^{d×r} with orthonormal columns, b ∈ ℝ^d,
    p_i = GumbelSoftmax([l_i, 0]; τ).

Why this form: each column of Q is a direction the adaptor may *zero* (p_i = 1) or leave alone
(p_i = 0), and the bias b sits outside the subspace. With few pairs it can drop every direction
and become a pure bias, a CAA-like shift; with more pairs it can zero a subspace first, like ACE
(document 000 §2.3.4: it "learns to drop dimensions in low-data regimes").

Gates. GumbelSoftmax over the two logits [l_i, 0] is σ((l_i + g)/τ) with g the difference of two
Gumbel draws, i.e. a standard logistic draw. Training uses straight-through hard samples (the
forward pass sees p_i ∈ {0, 1}, the gradient flows through the soft value), so the edit trained
is the edit kept: the saved adaptor holds the most likely gate, p_i = 1 when l_i > 0, and the
logits themselves go into its config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch

from steering_core.vectors.methods import METHODS, FitContext, FitResult
from steering_core.vectors.trained.adaptor import Adaptor, AdaptorKind, adaptor_result, register_kind
from steering_core.vectors.trained.loop import (
    Progress,
    Stop,
    TrainConfig,
    TrainingError,
    activation_scale,
    check_pairs,
    check_rank,
    orthonormal_rows,
    run_steps,
)


@dataclass(frozen=True)
class LorestConfig(TrainConfig):
    """LoReST training: ``rank`` r (directions that may be dropped), Gumbel temperature ``tau``,
    the gates' starting logit (0: each direction starts as a coin flip), Adam steps and rate, seed."""

    rank: int = 4
    tau: float = 1.0
    init_logit: float = 0.0
    steps: int = 400


def lorest_delta(a: torch.Tensor, Q: torch.Tensor, p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """f(a) − a = −(a Q) diag(p) Qᵀ + b for activations ``[..., d]``."""
    return -((a @ Q) * p) @ Q.transpose(0, 1) + b


def lorest_apply(a: torch.Tensor, Q: torch.Tensor, p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 2.4: a − (a Q) diag(p) Qᵀ + b."""
    return a + lorest_delta(a, Q, p, b)


def gumbel_gates(logits: torch.Tensor, tau: float, noise: torch.Tensor | None = None,
                 hard: bool = True) -> torch.Tensor:
    """p_i = GumbelSoftmax([l_i, 0]; τ)₀ = σ((l_i + noise_i)/τ), ``noise`` a logistic draw (None:
    no noise). ``hard``: the forward value is 1[l_i + noise_i > 0], the gradient the soft one's."""
    z = logits if noise is None else logits + noise
    soft = torch.sigmoid(z / tau)
    if not hard:
        return soft
    return (z > 0).to(soft.dtype) + soft - soft.detach()


def logistic_noise(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """g₁ − g₂ for two independent Gumbel(0, 1) draws: log u − log(1 − u), u ~ U(0, 1)."""
    u = torch.rand(shape, generator=gen).clamp(1e-6, 1 - 1e-6)
    return u.log() - (-u).log1p()


def _check(p: Mapping[str, torch.Tensor]) -> str | None:
    Q, gates, b = p["Q"], p["p"], p["b"]
    if Q.dim() != 2 or gates.dim() != 1 or gates.shape[0] != Q.shape[1] or b.dim() != 1 or b.shape[0] != Q.shape[0]:
        return (f"A LoReST adaptor needs Q [d_model, rank], p of length rank and b of length d_model; got Q "
                f"{tuple(Q.shape)}, p {tuple(gates.shape)}, b {tuple(b.shape)}.")
    if Q.shape[1] > Q.shape[0]:
        return f"A LoReST adaptor's rank ({Q.shape[1]}) cannot exceed d_model ({Q.shape[0]})."
    if bool(((gates < 0) | (gates > 1)).any()):
        return "A LoReST adaptor's gates p must lie between 0 and 1."
    if float((Q.transpose(0, 1) @ Q - torch.eye(Q.shape[1])).abs().max()) > 1e-3:
        return "A LoReST adaptor's Q must have orthonormal columns (Qᵀ Q = I); this one does not."
    return None


KIND = register_kind(AdaptorKind(
    name="lorest", label="LoReST", params=("Q", "p", "b"),
    delta=lambda a, p: lorest_delta(a, p["Q"], p["p"], p["b"]), check=_check,
    d_model=lambda p: int(p["Q"].shape[0]), rank=lambda p: int(p["Q"].shape[1]),
    about="low-rank projection and bias (it zeros the gated directions of Q and adds b)"))


def train_lorest(pos: torch.Tensor, neg: torch.Tensor, config: LorestConfig | None = None,
                 on_progress: Progress = None, stop: Stop = None) -> Adaptor:
    """Train a LoReST adaptor that maps each negative activation onto its positive.

    Same loss and normalisation as LoReFT (mean ‖f(a⁻) − a⁺‖² over mean ‖a⁻ − a⁺‖²); fresh
    logistic noise for the gates at every step, from the config's seed. The reported final
    ``loss`` is that of the adaptor as kept (the most likely gates, no noise).
    """
    config = config or LorestConfig()
    config.check("LoReST")
    if isinstance(config.tau, bool) or not isinstance(config.tau, (int, float)) or not 0 < config.tau < float("inf"):
        raise TrainingError(f"LoReST: the Gumbel temperature tau must be a finite number above 0, not {config.tau!r}.")
    pos, neg = check_pairs(pos, neg, METHODS["lorest"].min_pairs, "LoReST")
    d = pos.shape[1]
    rank = check_rank(config.rank, d, "LoReST")
    scale = activation_scale(pos, neg)
    xp, xn = pos / scale, neg / scale
    gap = (xp - xn).pow(2).sum(-1).mean().clamp(min=1e-12)
    gen = torch.Generator().manual_seed(config.seed)
    raw = orthonormal_rows(torch.randn(rank, d, generator=gen)).requires_grad_(True)  # unit rows: see LoReFT
    logits = torch.full((rank,), float(config.init_logit), requires_grad=True)
    b = torch.zeros(d, requires_grad=True)

    def loss_at(_step: int) -> torch.Tensor:
        gates = gumbel_gates(logits, float(config.tau), logistic_noise((rank,), gen))
        out = lorest_apply(xn, orthonormal_rows(raw).transpose(0, 1), gates, b)
        return (out - xp).pow(2).sum(-1).mean() / gap

    losses = run_steps([raw, logits, b], loss_at, config, "LoReST", on_progress, stop)
    with torch.no_grad():
        Q, gates = orthonormal_rows(raw).transpose(0, 1).contiguous(), (logits > 0).float()
        kept = float((lorest_apply(xn, Q, gates, b) - xp).pow(2).sum(-1).mean() / gap)  # with the gates kept
        params = {"Q": Q, "p": gates, "b": b.detach() * scale}
    facts = dict(asdict(config), scale=scale, pairs=int(pos.shape[0]), loss_start=losses[0], loss=kept,
                 logits=[float(x) for x in logits.detach()], dropped=int(params["p"].sum()))
    return Adaptor("lorest", params, facts)


def fit_lorest(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Registry entry: train with ``ctx.training`` (a :class:`LorestConfig`, or defaults)."""
    config = ctx.training if ctx.training is not None else LorestConfig()
    if not isinstance(config, LorestConfig):
        raise TrainingError(f"LoReST takes a LorestConfig, not {type(config).__name__}.")
    return adaptor_result("lorest", train_lorest(pos, neg, config, ctx.on_progress, ctx.stop), neg)


__all__ = ["KIND", "LorestConfig", "fit_lorest", "gumbel_gates", "logistic_noise", "lorest_apply", "lorest_delta",
           "train_lorest"]
