"""Every standard way to turn contrastive activations (or SAE features) into a steering vector,
behind one registry and one signature: ``fit(method, pos, neg, context) -> FitResult``.

``pos`` and ``neg`` are ``[n_pairs, d_model]`` activations at one layer (row i of each is pair i).
Methods that need an SAE or the pack's effect approximator read them from :class:`FitContext`.

Scale convention. CAA returns the raw mean difference, whose norm says how far apart the two
sides sit. Methods that only find a *direction* (PCA, probe, SAE decoders, SAE-TS …) are scaled
to the mean difference's component along that direction, so α = 1 means "shift by the average
gap between the sides" for every method, and α sliders mean the same thing across methods.
Only a direction that the data does not separate at all (component ≤ 0 after the sign choice)
is returned unit-norm, with a warning.

Trained methods (``vectors/trained/``: LoReFT, LoReST, BiPO) keep the same signature and read
their config, progress callback and stop flag from :class:`FitContext`. Their scale is what they
learn (α = 1 is the trained intervention). LoReFT and LoReST produce an adaptor, not a vector:
the result's operator applies it (``Method.produces`` says which).
"""

from __future__ import annotations

import math
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
    needs_model: bool = False  # trains through the model on the pairs' texts (FitContext model/layer/texts)
    trained: bool = False  # an optimisation loop: honours FitContext training, on_progress and stop
    produces: str = "vector"  # "vector", or "adaptor": a parametrised edit applied by its own operator
    about: str = ""


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (the pages list whatever is registered)."""
    METHODS[method.name] = method
    return method


# -- helpers -------------------------------------------------------------------------------------


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp(min=1e-12)


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
        warnings.append(f"{method}: positives do not project higher than negatives along this direction; "
                        "returned unit-norm.")
        gap = 1.0
    return FitResult(method, u * gap, info=dict(info or {}, gap=gap), warnings=warnings)


def _need_sae(ctx: FitContext, method: str):
    if ctx.sae is None:
        raise FitError(f"{method} needs an SAE; open a feature pack or load an SAE for this layer.")
    return ctx.sae


def _need_approx(ctx: FitContext, method: str):
    if ctx.approximator is None:
        raise FitError(f"{method} needs the pack's effect approximator; open a pack built for this model and layer.")
    return ctx.approximator


def _w_dec(sae: LoadedSAE) -> torch.Tensor:
    return sae.W_dec.detach().float()


def _weights_vector(ctx: FitContext, d_sae: int, method: str) -> torch.Tensor:
    fw = ctx.feature_weights
    if not fw:
        raise FitError(f"{method} needs features to target: pick at least one feature and a weight.")
    t = torch.zeros(d_sae)
    for fid, w in fw.items():
        if isinstance(fid, bool) or not isinstance(fid, int) or not 0 <= fid < d_sae:
            raise FitError(f"Feature {fid!r} does not exist: this SAE has features 0 to {d_sae - 1}.")
        if not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise FitError(f"Feature {fid}'s weight must be a finite number, got {w!r}.")
        t[fid] = float(w)
    if not bool(t.any()):
        raise FitError(f"{method}: every feature weight is zero.")
    return t


def feature_difference(sae: LoadedSAE, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean SAE feature activation of positives minus negatives ``[d_sae]`` ([SAE-Gender])."""
    return (sae.encode(pos.float()).float() - sae.encode(neg.float()).float()).mean(0)


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
        raise FitError(f"{method}: no SAE feature is more active on the positives than on the negatives.")
    t[idx[keep]] = val[keep]
    return t


# -- methods -------------------------------------------------------------------------------------


def caa(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Contrastive activation addition: the mean of (positive − negative) over pairs."""
    v = _mean_diff(pos, neg)
    warnings = ["Only one pair: the vector is that pair's difference, noise included."] if pos.shape[0] == 1 else []
    return FitResult("caa", v, info={"gap": float(v.norm())}, warnings=warnings)


def pca_diff(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """First principal direction of the pair differences (uncentred: the differences' shared shift
    is the signal, so it is not subtracted away)."""
    d = pos.float() - neg.float()
    _, s, vh = torch.linalg.svd(d, full_matrices=False)
    share = float(s[0] ** 2 / (s ** 2).sum().clamp(min=1e-12))
    return _scaled(vh[0], pos, neg, "pca_diff", {"explained": share})


def pca_center(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """First principal component of all activations centred on their mean: the direction along
    which the whole set varies most, oriented towards the positives."""
    x = torch.cat([pos.float(), neg.float()])
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    share = float(s[0] ** 2 / (s ** 2).sum().clamp(min=1e-12))
    return _scaled(vh[0], pos, neg, "pca_center", {"explained": share})


def probe(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Logistic-regression direction separating positives from negatives (features standardised
    for the fit, weights mapped back to residual-stream coordinates)."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos.float(), neg.float()]).numpy()
    y = [1] * pos.shape[0] + [0] * neg.shape[0]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=ctx.probe_l2, max_iter=2000)
    clf.fit((x - mu) / sd, y)
    w = torch.from_numpy(clf.coef_[0] / sd).float()
    acc = float(clf.score((x - mu) / sd, y))
    return _scaled(w, pos, neg, "probe", {"train_accuracy": acc})


def ace(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
    """Affine concept editing: direction r = CAA, reference a₀ = mean of the negatives. Steering
    sets the component along r to a₀'s plus α·|r| (see :class:`steering_core.model.operators.AceTerm`):
    α = 1 lands every activation at the positives' mean component."""
    r = _mean_diff(pos, neg)
    return FitResult("ace", r, operator="ace", reference=neg.float().mean(0),
                     info={"gap": float(r.norm())})


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
        warnings.append(f"{name}: the positives do not sit further along this vector than the negatives "
                        "(it targets features, not the dataset's gap); returned unit-norm.")
        gap = 1.0
    return FitResult(name, u * gap, info=dict(info, gap=gap), warnings=warnings)


register(Method("caa", "CAA (mean difference)", caa, min_pairs=1,
                about="Mean of positive − negative activations ([Rimsky 2024]; [Purchase 2025] §2.3.1)."))
register(Method("pca_diff", "PCA of differences", pca_diff, min_pairs=2,
                about="First principal direction of the pair differences (repeng's pca_diff)."))
register(Method("pca_center", "PCA of centred activations", pca_center, min_pairs=2,
                about="First principal component of all activations, centred (repeng's pca_center)."))
register(Method("probe", "Linear probe", probe, min_pairs=4,
                about="Logistic-regression direction separating the two sides."))
register(Method("ace", "ACE (affine concept editing)", ace, min_pairs=2,
                about="Sets the component along the CAA direction instead of adding ([Purchase 2025] eq. 2.2)."))
register(Method("sae_features", "SAE features (weighted decoders)", sae_top_features, min_pairs=1, needs_sae=True,
                about="Decoder rows of the features the positives raise most, weighted by the raise."))
register(Method("feature_delta", "Feature-Delta", feature_delta, min_pairs=1, needs_sae=True,
                about="Decode the mean SAE feature difference ([SAE-Gender])."))
register(Method("sae_combo", "Hand-picked SAE features", sae_combo, min_pairs=0, needs_sae=True, needs_features=True,
                uses_pairs=False, about="A weighted sum of decoder rows you choose."))
register(Method("saets", "SAE-TS", saets, min_pairs=1, features_suffice=True, needs_sae=True, needs_approximator=True,
                about="Targets features through the effect approximator ([Chalnev 2024] §4)."))
register(Method("pinv", "Pseudoinverse", pinv, min_pairs=1, features_suffice=True, needs_sae=True, needs_approximator=True,
                about="Pseudoinverse of the effect approximator ([Chalnev 2024] App. A)."))
register(Method("rotation", "Rotation", rotation, min_pairs=1, features_suffice=True, needs_sae=True, needs_approximator=True,
                about="Decoder direction rotated into effect space ([Chalnev 2024] App. D)."))


def _trained(module: str, fn: str) -> Callable[[torch.Tensor, torch.Tensor, FitContext], FitResult]:
    """The registry's entry for a method whose code lives in ``vectors/trained/<module>.py``,
    imported when first fitted (those modules import this one)."""
    def run(pos: torch.Tensor, neg: torch.Tensor, ctx: FitContext) -> FitResult:
        from importlib import import_module

        return getattr(import_module(f"steering_core.vectors.trained.{module}"), fn)(pos, neg, ctx)

    run.__name__ = run.__qualname__ = fn
    return run


register(Method("loreft", "LoReFT (trained low-rank adaptor)", _trained("loreft", "fit_loreft"), min_pairs=4,
                trained=True, produces="adaptor",
                about="Trains a rank-r edit that maps negatives onto positives ([Wu 2024]; [Purchase 2025] eq. 2.3). "
                      "Produces an adaptor (R, W, b), not one vector: it steers through its own operator, and its "
                      "saved direction is its mean edit."))
register(Method("lorest", "LoReST (trained low-rank steering)", _trained("lorest", "fit_lorest"), min_pairs=4,
                trained=True, produces="adaptor",
                about="Trains gated directions to zero plus a bias ([Krasheninnikov 2024]; [Purchase 2025] eq. 2.4). "
                      "Produces an adaptor (Q, p, b), not one vector: it steers through its own operator, and its "
                      "saved direction is its mean edit."))
register(Method("bipo", "BiPO (preference-trained vector)", _trained("bipo", "fit_bipo"), min_pairs=2,
                needs_model=True, trained=True,
                about="Trains a vector through the model so that +v prefers the positive completion and -v the "
                      "negative ([Cao 2024]). Produces one additive vector."))


def available(ctx: FitContext | None = None) -> list[Method]:
    """Methods whose requirements the context meets (the page greys out the others)."""
    ctx = ctx or FitContext()
    return [m for m in METHODS.values()
            if (not m.needs_sae or ctx.sae is not None) and (not m.needs_approximator or ctx.approximator is not None)
            and (not m.needs_model or ctx.model is not None)]


def fit(method: str, pos: torch.Tensor | None, neg: torch.Tensor | None, ctx: FitContext | None = None) -> FitResult:
    """Fit ``method`` on paired activations; every way the input can be unusable is a FitError."""
    ctx = ctx or FitContext()
    m = METHODS.get(method)
    if m is None:
        raise FitError(f"Unknown method {method!r}; available: {', '.join(METHODS)}.")
    need_pairs = m.uses_pairs and not (m.features_suffice and ctx.feature_weights)
    if m.needs_model and pos is None:
        need_pairs = False  # it reads FitContext.texts instead, and checks them itself
    if need_pairs or pos is not None:
        if pos is None or neg is None:
            raise FitError(f"{m.label} needs a dataset of pairs.")
        pos, neg = pos.detach().float().cpu(), neg.detach().float().cpu()
        if pos.dim() != 2 or pos.shape != neg.shape:
            raise FitError(f"Positive and negative activations must be matching [pairs, d_model] tensors, "
                           f"got {tuple(pos.shape)} and {tuple(neg.shape)}.")
        if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
            raise FitError("The activations contain NaN or infinite values.")
        if pos.shape[0] < m.min_pairs:
            raise FitError(f"{m.label} needs at least {m.min_pairs} pairs; this dataset has {pos.shape[0]}.")
        if need_pairs and float((pos - neg).abs().max()) == 0.0:
            raise FitError("Every pair has identical positive and negative activations: the vector would be zero.")
    else:
        pos = neg = torch.zeros(0, 0)
    res = m.fn(pos, neg, ctx)
    if not torch.isfinite(res.direction).all():
        raise FitError(f"{m.label} produced a vector with NaN values (degenerate data).")
    if float(res.direction.norm()) == 0.0:
        raise FitError(f"{m.label} produced a zero vector: the two sides do not differ.")
    return res


def parse_feature_weights(text: str | None) -> dict[int, float]:
    """``"812:1.0, 95:-0.5, 7"`` → ``{812: 1.0, 95: -0.5, 7: 1.0}`` (a bare id weighs 1). Empty text
    is an empty dict; anything unreadable is a FitError naming the bad piece."""
    out: dict[int, float] = {}
    for piece in (text or "").replace(";", ",").split(","):
        piece = piece.strip()
        if not piece:
            continue
        fid_s, _, w_s = piece.partition(":")
        try:
            fid = int(fid_s.strip())
            w = float(w_s) if w_s.strip() else 1.0
        except ValueError:
            raise FitError(f"Cannot read {piece!r}: write feature weights as id:weight, e.g. 812:1.0.") from None
        if fid < 0 or not math.isfinite(w):
            raise FitError(f"{piece!r}: feature ids are whole numbers ≥ 0 and weights finite numbers.")
        out[fid] = out.get(fid, 0.0) + w
    return out
