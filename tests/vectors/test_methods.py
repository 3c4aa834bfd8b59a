"""Fitting methods on synthetic activations with a planted direction, and against hand formulas."""

from __future__ import annotations

import pytest
import torch

from steering_core.measure.approximator import Approximator
from steering_core.model.saes import attach
from steering_core.vectors.methods import METHODS, FitContext, FitError, available, feature_difference, fit


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def planted(n=256, d=16, gap=4.0, seed=0):
    """Negatives ~ N(0, I); positives = negatives' distribution shifted by a varying gap along u."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    neg = torch.randn(n, d, generator=g)
    shift = gap + 0.5 * torch.randn(n, 1, generator=g)
    pos = torch.randn(n, d, generator=g) + shift * u
    return pos, neg, u


RECOVERING = ["caa", "pca_diff", "pca_center", "probe", "ace"]


@pytest.mark.parametrize("method", RECOVERING)
def test_methods_recover_the_planted_direction(method):
    pos, neg, u = planted()
    res = fit(method, pos, neg)
    assert _cos(res.direction, u) >= 0.95, (method, _cos(res.direction, u))
    # oriented towards the positives
    assert float((pos - neg).mean(0) @ res.direction) > 0


def test_caa_is_the_hand_computed_mean_difference():
    pos = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, -1.0]])
    neg = torch.tensor([[0.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    res = fit("caa", pos, neg)
    # ((1,1,2) + (2,-2,-3)) / 2
    assert torch.equal(res.direction, torch.tensor([1.5, -0.5, -0.5]))


def test_direction_methods_are_scaled_to_the_mean_gap():
    pos, neg, u = planted()
    caa = fit("caa", pos, neg).direction
    for m in ("pca_diff", "pca_center", "probe"):
        v = fit(m, pos, neg).direction
        # |v| equals the mean difference's component along v
        assert abs(float(v.norm()) - float(caa @ (v / v.norm()))) < 1e-4


def test_one_pair_caa_warns_and_others_refuse():
    pos, neg, _ = planted(n=1)
    res = fit("caa", pos, neg)
    assert res.warnings and "one pair" in res.warnings[0].lower()
    for m in ("pca_diff", "probe", "ace"):
        with pytest.raises(FitError, match="at least"):
            fit(m, pos, neg)


def test_identical_sides_refused_with_a_clear_message():
    x = torch.randn(8, 4)
    with pytest.raises(FitError, match="identical"):
        fit("caa", x, x.clone())


def test_bad_shapes_nan_and_unknown_method():
    with pytest.raises(FitError, match="matching"):
        fit("caa", torch.randn(4, 3), torch.randn(5, 3))
    bad = torch.randn(4, 3)
    bad[0, 0] = float("nan")
    with pytest.raises(FitError, match="NaN"):
        fit("caa", bad, torch.randn(4, 3))
    with pytest.raises(FitError, match="Unknown method"):
        fit("nope", torch.randn(4, 3), torch.randn(4, 3))


def test_ace_reference_is_the_negative_mean_and_direction_is_caa():
    pos, neg, _ = planted(n=32)
    res = fit("ace", pos, neg)
    assert res.operator == "ace"
    assert torch.allclose(res.reference, neg.mean(0))
    assert torch.allclose(res.direction, (pos - neg).mean(0))


# -- SAE and approximator methods ------------------------------------------------------------


class _LinearSAE(torch.nn.Module):
    """A ReLU SAE with known weights (enough for exact reference computations)."""

    def __init__(self, d=8, d_sae=12, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_enc = torch.nn.Parameter(torch.randn(d, d_sae, generator=g))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d, generator=g))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

        class Cfg:
            pass

        self.cfg = Cfg()
        self.cfg.d_sae, self.cfg.d_in, self.cfg.hook_name = d_sae, d, "blocks.1.hook_resid_post"

    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec


@pytest.fixture
def sae():
    return attach(_LinearSAE(), source="test")


@pytest.fixture
def approx():
    g = torch.Generator().manual_seed(1)
    return Approximator(torch.randn(8, 12, generator=g), torch.randn(12, generator=g), 0.5, 0.0, 10)


def _unit(v):
    return v / v.norm()


def test_feature_delta_decodes_the_mean_feature_difference(sae):
    pos, neg = torch.randn(6, 8), torch.randn(6, 8)
    res = fit("feature_delta", pos, neg, FitContext(sae=sae))
    inner = sae.sae
    ref = (inner.encode(pos) - inner.encode(neg)).mean(0) @ inner.W_dec
    assert _cos(res.direction, ref) > 0.9999 or _cos(res.direction, -ref) > 0.9999
    assert torch.allclose(feature_difference(sae, pos, neg), (inner.encode(pos) - inner.encode(neg)).mean(0).detach())


def test_sae_combo_is_the_weighted_sum_of_unit_decoder_rows(sae):
    w = sae.W_dec.detach()
    res = fit("sae_combo", None, None, FitContext(sae=sae, feature_weights={2: 1.0, 5: -0.5}))
    ref = _unit(_unit(w[2]) - 0.5 * _unit(w[5]))
    assert torch.allclose(res.direction, ref, atol=1e-6)


def test_a_method_that_ignores_hand_picked_features_refuses_them(sae):
    """Audit: target features typed for "SAE features (weighted decoders)" were silently ignored
    (it ranks the dataset's own), so a fit looked steered by them and was not."""
    pos, neg = torch.randn(6, 8) + 1, torch.randn(6, 8)
    for name in ("sae_features", "feature_delta", "caa"):
        with pytest.raises(FitError, match="does not take hand-picked features.*SAE-TS"):
            fit(name, pos, neg, FitContext(sae=sae, feature_weights={2: 1.0}))
    takers = {m.name for m in METHODS.values() if m.takes_features}
    assert takers == {"sae_combo", "saets", "pinv", "rotation"}
    assert {m.name for m in METHODS.values() if m.ranks_features} == {"sae_features", "saets", "pinv", "rotation"}


def test_saets_pinv_rotation_match_design_formulas(sae, approx):
    t = torch.zeros(12)
    t[3], t[7] = 1.0, 0.5
    ctx = FitContext(sae=sae, approximator=approx, feature_weights={3: 1.0, 7: 0.5})
    M, b = approx.M, approx.b
    # SAE-TS: s = norm(norm(M t) − λ·norm(M b))
    ref = _unit(_unit(M @ t) - _unit(M @ b))
    assert torch.allclose(fit("saets", None, None, ctx).direction, ref, atol=1e-5)
    # pseudoinverse: (t/|t| − b)·pinv(M)
    ref = _unit((t / t.norm() - b) @ torch.linalg.pinv(M))
    assert torch.allclose(fit("pinv", None, None, ctx).direction, ref, atol=1e-5)
    # rotation: C = colnorm(M)·rownorm(W_dec) = UΣVᵀ, R = UVᵀ, v = norm(norm(d R) − norm(M b))
    w = sae.W_dec.detach()
    C = (M / M.norm(dim=0, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True))
    U, _, Vh = torch.linalg.svd(C)
    d = t @ (w / w.norm(dim=1, keepdim=True))
    ref = _unit(_unit(d @ (U @ Vh)) - _unit(M @ b))
    assert torch.allclose(fit("rotation", None, None, ctx).direction, ref, atol=1e-5)


def test_missing_sae_or_approximator_gives_a_clear_error(approx):
    pos, neg, _ = planted(n=8, d=8)
    with pytest.raises(FitError, match="needs an SAE"):
        fit("feature_delta", pos, neg)
    with pytest.raises(FitError, match="approximator"):
        fit("saets", pos, neg, FitContext(sae=None))
    names = {m.name for m in available(FitContext())}
    assert "caa" in names and "saets" not in names and "feature_delta" not in names


def test_sae_combo_validates_feature_ids_and_weights(sae):
    with pytest.raises(FitError, match="does not exist"):
        fit("sae_combo", None, None, FitContext(sae=sae, feature_weights={99: 1.0}))
    with pytest.raises(FitError, match="finite"):
        fit("sae_combo", None, None, FitContext(sae=sae, feature_weights={1: float("inf")}))
    with pytest.raises(FitError, match="pick at least one"):
        fit("sae_combo", None, None, FitContext(sae=sae, feature_weights={}))


def test_every_registered_method_has_a_label_and_minimum():
    assert len(METHODS) >= 11
    for m in METHODS.values():
        assert m.label and m.about and m.min_pairs >= 0


def test_feature_weights_are_read_from_text():
    from steering_core.vectors.methods import parse_feature_weights

    assert parse_feature_weights("812:1.0, 95:-0.5; 7") == {812: 1.0, 95: -0.5, 7: 1.0}
    assert parse_feature_weights("  ") == {}
    for bad in ("x:1", "3:abc", "-1:2", "4:nan"):
        with pytest.raises(FitError):
            parse_feature_weights(bad)


def test_the_registry_order_does_not_depend_on_which_module_is_imported_first():
    """The SAE methods live in their own module; importing it first once moved them after the
    trained methods on the Vectors page."""
    import subprocess
    import sys

    code = ("import {first}\nfrom steering_core.vectors.methods import METHODS\nprint(','.join(METHODS))")
    orders = {subprocess.run([sys.executable, "-c", code.format(first=m)], capture_output=True, text=True,
                             check=True).stdout.strip()
              for m in ("steering_core.vectors.sae_methods", "steering_core.vectors.methods",
                        "steering_core.vectors.method_base")}
    assert len(orders) == 1
    names = orders.pop().split(",")
    assert names.index("rotation") < names.index("loreft") and names[0] == "caa"


def test_messages_name_a_method_as_the_page_does_not_by_its_registry_key(sae):
    """Audit: 'Hand-picked SAE features' with no feature picked said "sae_combo needs features to
    target"; the page's method box never shows that key."""
    with pytest.raises(FitError, match=r"^Hand-picked SAE features needs an SAE"):
        fit("sae_combo", None, None, FitContext())
    with pytest.raises(FitError, match=r"^Hand-picked SAE features needs features to target"):
        fit("sae_combo", None, None, FitContext(sae=sae))
    with pytest.raises(FitError, match=r"^SAE-TS needs the pack's effect approximator"):
        fit("saets", torch.ones(2, 8), torch.zeros(2, 8), FitContext(sae=sae))
