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
from typing import Callable

import torch

from steering_core.vectors.method_base import (  # noqa: F401  (re-exported: the registry's public names)
    METHODS,
    FitContext,
    FitError,
    FitResult,
    Method,
    _mean_diff,
    _scaled,
    feature_difference,
    register,
)
from steering_core.vectors.sae_methods import SAE_METHODS

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

for _m in SAE_METHODS:  # SAE features, Feature-Delta, hand-picked, SAE-TS, pseudoinverse, rotation
    register(_m)


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
    if ctx.feature_weights and not m.takes_features:
        takers = ", ".join(x.label for x in METHODS.values() if x.takes_features)
        raise FitError(f"{m.label} does not take hand-picked features"
                       + (" (it ranks the dataset's own)" if m.ranks_features else "")
                       + f"; leave the target features empty, or choose one that does: {takers}.")
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
