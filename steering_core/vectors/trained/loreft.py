"""LoReFT: low-rank representation finetuning ([Wu 2024]; [Purchase 2025] eq. 2.3).

    a ← a + Rᵀ(W a + b − R a),   R ∈ ℝ^{r×d} with orthonormal rows, W ∈ ℝ^{r×d}, b ∈ ℝ^r.

Why this form: inside the r-dimensional subspace spanned by R's rows the activation's coordinates
R a are *replaced* by an affine function of the whole activation, W a + b, and everything
orthogonal to that subspace is left alone. Trained on contrastive pairs so that the edited
negatives land on their positives (document 000 §2.3.3: "the goal is to accurately predict a⁺
given a⁻"), it can learn edits that depend on the input, which no single added vector can.
Special case used as a check: with r = 1 and W = 0 it sets the component along the unit row r
to b, a ← a − (r·a) r + b r, a projection plus a bias.

The result is an :class:`~steering_core.vectors.trained.adaptor.Adaptor`, not a vector; it
steers through its own operator (see :mod:`steering_core.vectors.trained.adaptor`).
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
class LoreftConfig(TrainConfig):
    """LoReFT training: ``rank`` r of the edited subspace, Adam steps and rate, seed."""

    rank: int = 4
    steps: int = 400


def loreft_delta(a: torch.Tensor, R: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """f(a) − a = Rᵀ(W a + b − R a) for activations ``[..., d]`` (rows are activations, so the
    products are written a Wᵀ and a Rᵀ)."""
    return (a @ W.transpose(0, 1) + b - a @ R.transpose(0, 1)) @ R


def loreft_apply(a: torch.Tensor, R: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 2.3: a + Rᵀ(W a + b − R a)."""
    return a + loreft_delta(a, R, W, b)


def _check(p: Mapping[str, torch.Tensor]) -> str | None:
    R, W, b = p["R"], p["W"], p["b"]
    if R.dim() != 2 or W.shape != R.shape or b.dim() != 1 or b.shape[0] != R.shape[0]:
        return (f"A LoReFT adaptor needs R and W of one shape [rank, d_model] and b of length rank; got R "
                f"{tuple(R.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)}.")
    if R.shape[0] > R.shape[1]:
        return f"A LoReFT adaptor's rank ({R.shape[0]}) cannot exceed d_model ({R.shape[1]})."
    gram = R @ R.transpose(0, 1)
    if float((gram - torch.eye(R.shape[0])).abs().max()) > 1e-3:
        return "A LoReFT adaptor's R must have orthonormal rows (R Rᵀ = I); this one does not."
    return None


KIND = register_kind(AdaptorKind(
    name="loreft", label="LoReFT", params=("R", "W", "b"),
    delta=lambda a, p: loreft_delta(a, p["R"], p["W"], p["b"]), check=_check,
    d_model=lambda p: int(p["R"].shape[1]), rank=lambda p: int(p["R"].shape[0]),
    about="low-rank edit (the subspace R is given the coordinates W a + b)"))


def train_loreft(pos: torch.Tensor, neg: torch.Tensor, config: LoreftConfig | None = None,
                 on_progress: Progress = None, stop: Stop = None) -> Adaptor:
    """Train a LoReFT adaptor that maps each negative activation onto its positive.

    Loss: mean ‖f(a⁻) − a⁺‖² divided by mean ‖a⁻ − a⁺‖², so 1.0 is "no edit" and 0 a perfect
    map; full-batch Adam on activations divided by their RMS (b is rescaled back afterwards; R and
    W are scale-free). Starts from no edit (W = R, b = 0) so training can only improve on it.
    """
    config = config or LoreftConfig()
    config.check("LoReFT")
    pos, neg = check_pairs(pos, neg, METHODS["loreft"].min_pairs, "LoReFT")
    d = pos.shape[1]
    rank = check_rank(config.rank, d, "LoReFT")
    scale = activation_scale(pos, neg)
    xp, xn = pos / scale, neg / scale
    gap = (xp - xn).pow(2).sum(-1).mean().clamp(min=1e-12)
    gen = torch.Generator().manual_seed(config.seed)
    # unit-length rows: Adam moves each coordinate by about lr, so on rows of length 1 the subspace
    # turns at a useful rate whatever d is (rows of length √d, as randn gives, would barely turn)
    raw = orthonormal_rows(torch.randn(rank, d, generator=gen)).requires_grad_(True)
    W = raw.detach().clone().requires_grad_(True)
    b = torch.zeros(rank, requires_grad=True)

    def loss_at(_step: int) -> torch.Tensor:
        out = loreft_apply(xn, orthonormal_rows(raw), W, b)
        return (out - xp).pow(2).sum(-1).mean() / gap

    losses = run_steps([raw, W, b], loss_at, config, "LoReFT", on_progress, stop)
    with torch.no_grad():
        params = {"R": orthonormal_rows(raw), "W": W.detach().clone(), "b": b.detach() * scale}
    facts = dict(asdict(config), scale=scale, pairs=int(pos.shape[0]), loss_start=losses[0], loss=losses[-1])
    return Adaptor("loreft", params, facts)


def fit_loreft(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Registry entry: train with ``ctx.training`` (a :class:`LoreftConfig`, or defaults)."""
    config = ctx.training if ctx.training is not None else LoreftConfig()
    if not isinstance(config, LoreftConfig):
        raise TrainingError(f"LoReFT takes a LoreftConfig, not {type(config).__name__}.")
    return adaptor_result("loreft", train_loreft(pos, neg, config, ctx.on_progress, ctx.stop), neg)


__all__ = ["KIND", "LoreftConfig", "fit_loreft", "loreft_apply", "loreft_delta", "train_loreft"]
