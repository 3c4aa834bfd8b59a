"""The registered methods that read an SAE (and, for the targeted ones, the pack's effect
approximator): weighted decoder features, Feature-Delta, hand-picked features, SAE-TS, the
pseudoinverse and rotation ([Chalnev 2024]; [SAE-Gender]; docs/design.md §Vector methods).

Same signature and scale convention as :mod:`steering_core.vectors.methods`, which registers
:data:`SAE_METHODS` where they belong in its list (so the order never depends on import order)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from steering_core.vectors.method_base import (
    FitContext,
    FitError,
    FitResult,
    Method,
    _mean_diff,
    _scaled,
    _unit,
    feature_difference,
    method_label,
)

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE


def _need_sae(ctx: FitContext, method: str):
    if ctx.sae is None:
        raise FitError(f"{method_label(method)} needs an SAE; open a feature pack or load an SAE for this layer.")
    return ctx.sae


def _need_approx(ctx: FitContext, method: str):
    if ctx.approximator is None:
        raise FitError(f"{method_label(method)} needs the pack's effect approximator; open a pack built for this model and layer.")
    return ctx.approximator


def _w_dec(sae: LoadedSAE) -> torch.Tensor:
    return sae.W_dec.detach().float()


def _weights_vector(ctx: FitContext, d_sae: int, method: str) -> torch.Tensor:
    fw = ctx.feature_weights
    if not fw:
        raise FitError(f"{method_label(method)} needs features to target: pick at least one feature and a weight.")
    t = torch.zeros(d_sae)
    for fid, w in fw.items():
        if isinstance(fid, bool) or not isinstance(fid, int) or not 0 <= fid < d_sae:
            raise FitError(f"Feature {fid!r} does not exist: this SAE has features 0 to {d_sae - 1}.")
        if not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise FitError(f"Feature {fid}'s weight must be a finite number, got {w!r}.")
        t[fid] = float(w)
    if not bool(t.any()):
        raise FitError(f"{method_label(method)}: every feature weight is zero.")
    return t


def data_targets(ctx: FitContext, pos: torch.Tensor, neg: torch.Tensor, method: str) -> torch.Tensor:
    """Target weights for SAE-TS / pseudoinverse when no feature was hand-picked: the
    ``top_features`` features the positives raise most, weighted by how much."""
    sae = _need_sae(ctx, method)
    if ctx.feature_weights:
        return _weights_vector(ctx, sae.d_sae, method)
    delta = feature_difference(sae, pos, neg)
    k = max(1, min(ctx.top_features, delta.numel()))
    val, idx = delta.topk(k)
    t = torch.zeros_like(delta)
    keep = val > 0
    if not bool(keep.any()):
        raise FitError(f"{method_label(method)}: no SAE feature is more active on the positives than on the negatives.")
    t[idx[keep]] = val[keep]
    return t


#: The registry entries, registered by :mod:`steering_core.vectors.methods`.
SAE_METHODS: list[Method] = []


# -- methods -------------------------------------------------------------------------------------


def sae_top_features(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Weighted SAE decoder features: the ``top_features`` features the positives raise most,
    their decoder rows (unit) weighted by the raise."""
    sae = _need_sae(ctx, "sae_features")
    t = data_targets(FitContext(sae=sae, top_features=ctx.top_features), pos, neg, "sae_features")
    w = _w_dec(sae)
    w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
    ids = torch.nonzero(t).flatten().tolist()
    return _scaled(t @ w, pos, neg, "sae_features", {"features": {int(i): float(t[i]) for i in ids}})


def feature_delta(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Feature-Delta ([SAE-Gender] §IV-C, docs/references.md): encode both sides, take the mean
    feature difference over every feature, decode it through the decoder (no bias) into the
    residual stream."""
    sae = _need_sae(ctx, "feature_delta")
    delta = feature_difference(sae, pos, neg)
    v = delta @ _w_dec(sae)
    top = delta.abs().topk(min(8, delta.numel())).indices.tolist()
    return _scaled(v, pos, neg, "feature_delta", {"top_features": {int(i): float(delta[i]) for i in top}})


def sae_combo(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Hand-picked SAE features: Σ wᵢ·d̂ᵢ over chosen decoder rows (unit), returned unit-norm
    (no dataset involved, so α is in residual-stream units)."""
    sae = _need_sae(ctx, "sae_combo")
    t = _weights_vector(ctx, sae.d_sae, "sae_combo")
    w = _w_dec(sae)
    v = t @ (w / w.norm(dim=1, keepdim=True).clamp(min=1e-12))
    if float(v.norm()) < 1e-8:
        raise FitError("sae_combo: the weighted features cancel out to a zero vector.")
    return FitResult("sae_combo", _unit(v), info={"features": dict(ctx.feature_weights)})


def saets(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """SAE-TS ([Chalnev 2024] eq. 3): the vector whose *predicted effects* hit the target features,
    with the approximator's bias direction (what any steering does) projected out
    (docs/design.md §Effect approximator and targeted steering)."""
    from steering_core.measure.approximator import saets_vector

    approx = _need_approx(ctx, "saets")
    t = data_targets(ctx, pos, neg, "saets")
    v = saets_vector(approx, t, ctx.saets_lambda)
    return _result_from_unit("saets", v, pos, neg, t)


def pinv(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Pseudoinverse steering: solve the approximator for the vector whose effects are t/|t|."""
    from steering_core.measure.approximator import pinv_vector

    approx = _need_approx(ctx, "pinv")
    t = data_targets(ctx, pos, neg, "pinv")
    return _result_from_unit("pinv", pinv_vector(approx, t), pos, neg, t)


def rotation(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Rotation steering: rotate the targets' decoder direction into effect space ([Chalnev 2024] App. D)."""
    from steering_core.measure.approximator import rotation_vector

    approx = _need_approx(ctx, "rotation")
    sae = _need_sae(ctx, "rotation")
    t = data_targets(ctx, pos, neg, "rotation")
    w = _w_dec(sae)
    d = t @ (w / w.norm(dim=1, keepdim=True).clamp(min=1e-12))
    return _result_from_unit("rotation", rotation_vector(approx, w, d), pos, neg, t)


def _result_from_unit(name: str, v: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, t: torch.Tensor) -> FitResult:
    info = {"targets": {int(i): float(t[i]) for i in torch.nonzero(t).flatten().tolist()}}
    if pos.shape[0] == 0:
        return FitResult(name, _unit(v), info=info)
    # scale like the other data methods; keep the approximator's orientation (it is not a sign-free axis)
    u = _unit(v)
    gap = float(_mean_diff(pos, neg) @ u)
    warnings = []
    if gap <= 1e-8:
        warnings.append(f"{method_label(name)}: the positives do not sit further along this vector than the negatives "
                        "(it targets features, not the dataset's gap); returned unit-norm.")
        gap = 1.0
    return FitResult(name, u * gap, info=dict(info, gap=gap), warnings=warnings)


SAE_METHODS.append(Method("sae_features", "SAE features (weighted decoders)", sae_top_features, min_pairs=1, needs_sae=True,
                ranks_features=True,
                about="Decoder rows of the features the positives raise most, weighted by the raise."))
SAE_METHODS.append(Method("feature_delta", "Feature-Delta", feature_delta, min_pairs=1, needs_sae=True,
                about="Decode the mean SAE feature difference ([SAE-Gender])."))
SAE_METHODS.append(Method("sae_combo", "Hand-picked SAE features", sae_combo, min_pairs=0, needs_sae=True, needs_features=True,
                uses_pairs=False, about="A weighted sum of decoder rows you choose."))
SAE_METHODS.append(Method("saets", "SAE-TS", saets, min_pairs=1, features_suffice=True, needs_sae=True, needs_approximator=True,
                ranks_features=True,
                about="Targets features through the effect approximator ([Chalnev 2024] §4)."))
SAE_METHODS.append(Method("pinv", "Pseudoinverse", pinv, min_pairs=1, features_suffice=True, needs_sae=True, needs_approximator=True,
                ranks_features=True,
                about="Pseudoinverse of the effect approximator ([Chalnev 2024] App. A)."))
SAE_METHODS.append(Method("rotation", "Rotation", rotation, min_pairs=1, features_suffice=True, needs_sae=True, needs_approximator=True,
                ranks_features=True,
                about="Decoder direction rotated into effect space ([Chalnev 2024] App. D)."))
