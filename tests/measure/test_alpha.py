"""Loss-matched α (steering_core.measure.alpha): the quadratic model of ΔCE, its solver, and the
end-to-end search verified against independent ΔCE evaluations on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from steering_core import random_unit_vector
from steering_core.errors import SteeringError
from steering_core.measure.alpha import delta_ce, fit_quadratic, loss_matched_alpha, per_row_loss, solve_alpha
from steering_core.model.steerable import REFERENCE_TEXTS

pytestmark = pytest.mark.usefixtures("one_thread")


def _ref_ids(model, rows: int = 4) -> torch.Tensor:
    """Equal-length rows of real text (tokenize left-pads, so keep the last L tokens)."""
    ids, mask = model.tokenize(list(REFERENCE_TEXTS))
    length = int(mask.sum(-1).min())
    return ids[:rows, -length:].contiguous()


# ----------------------------------------------------------------------------------------------
# fit_quadratic / solve_alpha (pure maths)
# ----------------------------------------------------------------------------------------------


def test_fit_quadratic_recovers_g_and_c_exactly():
    g = torch.tensor([0.3, -1.2, 0.0, 2.5, 0.01], dtype=torch.float64)
    c = torch.tensor([0.8, 2.0, 1.5, -0.7, 0.0], dtype=torch.float64)
    a = torch.tensor([[-2.0, -0.5, 1.0, 3.0]] * 5, dtype=torch.float64) * torch.arange(1, 6)[:, None]
    d = g[:, None] * a + 0.5 * c[:, None] * a * a
    g_fit, c_fit = fit_quadratic(a, d)
    assert torch.allclose(g_fit, g, atol=1e-9) and torch.allclose(c_fit, c, atol=1e-9)
    # two symmetric probes determine the curve exactly too (float32 inputs)
    a2 = torch.tensor([[0.5, -0.5]] * 5)
    d2 = (g[:, None] * a2 + 0.5 * c[:, None] * a2 * a2).float()
    g2, c2 = fit_quadratic(a2, d2)
    assert torch.allclose(g2, g, atol=1e-5) and torch.allclose(c2, c, atol=1e-4)
    # and the closed form for ±p: g = (d+ − d−)/2p, c = (d+ + d−)/p²
    assert torch.allclose(c2, (d2[:, 0] + d2[:, 1]).double() / 0.25, atol=1e-5)


def test_solve_alpha_returns_positive_root():
    target = 0.5
    g = torch.tensor([0.1, 0.0, -0.3, 1.0, 0.2, 2.0])
    c = torch.tensor([2.0, 0.5, 4.0, 0.0, -0.01, -1.0])  # last two: concave with a real root
    fb = torch.full((6,), -99.0)
    a = solve_alpha(g, c, target, fb).double()
    assert (a > 0).all()
    g64, c64 = g.double(), c.double()
    assert torch.allclose(0.5 * c64 * a * a + g64 * a, torch.full((6,), target, dtype=torch.float64), atol=1e-5)
    # the concave case takes the first crossing, not the one beyond the maximum
    g_, c_ = 2.0, -1.0
    first = (-g_ + math.sqrt(g_ * g_ + 2 * c_ * target)) / c_
    assert a[-1].item() == pytest.approx(first, rel=1e-5)
    assert first < -g_ / c_  # before the vertex at α = 2


def test_solve_alpha_falls_back_without_positive_root():
    target = 0.5
    fb = torch.tensor([7.0, 8.0, 9.0, 10.0, 11.0])
    g = torch.tensor([0.1, -0.2, 0.0, -1.0, 0.0])
    c = torch.tensor([-1.0, 0.0, 0.0, -0.5, -2.0])
    # row 0: c<0, disc = 0.01 − 1 < 0 (the parabola peaks below the target)
    # rows 1–4: g ≤ 0 and c ≤ 0: ΔCE never rises
    a = solve_alpha(g, c, target, fb)
    assert torch.equal(a, fb)
    # g<0 with c>0 still has a positive root: no fallback
    a2 = solve_alpha(torch.tensor([-0.5]), torch.tensor([1.0]), target, torch.tensor([123.0]))
    assert a2.item() != 123.0 and (0.5 * a2 ** 2 - 0.5 * a2).item() == pytest.approx(target, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# ΔCE on tiny models
# ----------------------------------------------------------------------------------------------


def test_delta_ce_of_zero_alpha_is_zero(tiny):
    ref = _ref_ids(tiny)
    vecs = torch.stack([random_unit_vector(tiny.d_model, seed=s) for s in range(5)])
    for layer in range(tiny.n_layers):
        d = delta_ce(tiny, ref, layer, vecs, torch.zeros(5))
        assert d.shape == (5,)
        assert d.abs().max() <= 1e-6
    # and a non-zero α does move the loss, by the same amount as a direct steered evaluation
    a = 0.25 * tiny.residual_norms()[1]
    d = delta_ce(tiny, ref, 1, vecs[:1], torch.tensor([a]))
    direct = per_row_loss(tiny, ref, [(1, vecs[0], a)]).mean() - per_row_loss(tiny, ref).mean()
    assert d.abs().item() > 1e-4  # well above float32 noise (zero α gives ≤ 1e-6)
    assert d.item() == pytest.approx(direct.item(), abs=1e-5)


def test_delta_ce_is_locally_quadratic(tiny):
    ref = _ref_ids(tiny)
    layer = 1
    f = 4
    vecs = torch.stack([random_unit_vector(tiny.d_model, seed=s) for s in range(f)])
    h = 0.03 * tiny.residual_norms()[layer]
    at = lambda a: delta_ce(tiny, ref, layer, vecs, torch.full((f,), float(a)))  # noqa: E731
    g, c = fit_quadratic(torch.tensor([[h, -h]] * f), torch.stack([at(h), at(-h)], 1))
    big = 2 * h  # an independent central finite difference, at another step
    f0 = at(0.0)
    fd = (at(big) - 2 * f0 + at(-big)) / (big * big)
    assert (c.abs() > 1e-5).all()  # curvature clearly above float noise
    assert torch.allclose(c.float(), fd, rtol=0.1, atol=0)
    # the slope agrees with a central first difference too
    fd1 = (at(big) - at(-big)) / (2 * big)
    assert torch.allclose(g.float(), fd1, rtol=0.1, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# loss_matched_alpha
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False])
def test_loss_matched_alpha_hits_target(tiny, symmetric):
    ref = _ref_ids(tiny)
    layer, target, tol, f = 1, 0.05, 0.2, 8
    norm = tiny.residual_norms()[layer]
    vecs = torch.stack([random_unit_vector(tiny.d_model, seed=s) for s in range(f)])
    # orient each direction so that a small positive α raises the loss (a negative slope never
    # reaches a positive target; tiny random models are not symmetric in α)
    sign = delta_ce(tiny, ref, layer, vecs, torch.full((f,), 0.05 * norm)).sign()
    vecs = vecs * sign[:, None]
    probe = 0.25 * norm  # the default; a full residual norm already saturates these random models
    evals = []
    res = loss_matched_alpha(tiny, ref, layer, vecs, target=target, tolerance=tol, symmetric=symmetric,
                             on_eval=evals.append)

    # progress: one call per loss evaluation, the unsteered baseline included
    assert evals == list(range(1, res.evals_per_vector + 2))
    assert res.alpha.shape == res.dce.shape == res.curvature.shape == res.slope.shape == (f,)
    assert res.evals_per_vector in ((3, 4) if symmetric else (2, 3))
    assert (res.alpha >= probe / 64 - 1e-4).all() and (res.alpha <= 16 * probe + 1e-3).all()

    # consistency, for every row: dce is ΔCE measured at the returned α
    check = delta_ce(tiny, ref, layer, vecs, res.alpha)
    assert torch.allclose(res.dce, check, atol=1e-5)

    hit = (res.dce - target).abs() <= tol * target
    assert int(hit.sum()) >= f // 2, (res.alpha, res.dce)
    # the rows that reach it were solved, not found at a clamp: α strictly inside the bounds
    assert (res.alpha[hit] < 16 * probe).all() and (res.alpha[hit] > probe / 64).all()


def test_loss_matched_alpha_respects_max_alpha(tiny_tl):
    ref = _ref_ids(tiny_tl)
    layer = 1
    probe = tiny_tl.residual_norms()[layer]
    vecs = torch.stack([random_unit_vector(tiny_tl.d_model, seed=s) for s in range(4)])
    cap = 0.1 * probe  # far below what a 0.5-nat target needs on this model
    res = loss_matched_alpha(tiny_tl, ref, layer, vecs, target=0.5, probe=probe, max_alpha=cap)
    assert torch.allclose(res.alpha, torch.full((4,), cap), rtol=1e-6)
    assert torch.allclose(res.dce, delta_ce(tiny_tl, ref, layer, vecs, res.alpha), atol=1e-5)
    assert (res.dce < 0.5 * 0.8).all()  # so every row missed, and was re-solved once
    assert res.evals_per_vector == 4


def test_loss_matched_alpha_independent_rows(tiny_hf):
    """A vector's α does not depend on which other vectors share its batch."""
    ref = _ref_ids(tiny_hf)
    vecs = torch.stack([random_unit_vector(tiny_hf.d_model, seed=s) for s in range(4)])
    all_ = loss_matched_alpha(tiny_hf, ref, 2, vecs, target=0.05)
    one = loss_matched_alpha(tiny_hf, ref, 2, vecs[1:2], target=0.05)
    assert one.alpha.item() == pytest.approx(all_.alpha[1].item(), rel=1e-4)
    assert one.dce.item() == pytest.approx(all_.dce[1].item(), abs=1e-5)


@pytest.mark.parametrize("target", [0.0, -0.5, float("nan"), float("inf"), "0.5", None])
def test_bad_target_raises(tiny_hf, target):
    ref = _ref_ids(tiny_hf, rows=1)
    with pytest.raises(SteeringError) as info:
        loss_matched_alpha(tiny_hf, ref, 1, random_unit_vector(tiny_hf.d_model), target=target)
    assert isinstance(info.value, ValueError)
    assert "target" in str(info.value)


def test_auto_alpha_hits_the_target_on_reference_text(tiny_hf):
    from steering_core.measure.alpha import auto_alpha, delta_ce, reference_ids

    v = 7.0 * random_unit_vector(tiny_hf.d_model, seed=11)
    res = auto_alpha(tiny_hf, 1, v, target=0.3)
    unit = v / v.norm()
    check = float(delta_ce(tiny_hf, reference_ids(tiny_hf), 1, unit[None], res.alpha)[0])
    assert check == pytest.approx(float(res.dce[0]), abs=1e-5)
    assert abs(check - 0.3) <= 0.2 * 0.3
    with pytest.raises(SteeringError, match="non-zero"):
        auto_alpha(tiny_hf, 1, torch.zeros(tiny_hf.d_model))


def test_refine_brackets_a_direction_the_two_solves_miss(tiny_hf):
    """A ΔCE that stays flat and then jumps defeats the quadratic solves (the embedded pack's
    #1587: 7.55 nats for a 0.5 target); bracketing steps on the rows still missing bring it within
    tolerance, and rows that hit are left exactly as they were."""
    import steering_core.measure.alpha as am

    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(3, tiny_hf.d_model), dim=1)
    ref = torch.randint(0, 100, (2, 12))
    plain = am.loss_matched_alpha(tiny_hf, ref, 1, v, symmetric=False)
    real = am.delta_ce

    def cubic_for_row0(model, ref_ids, layer, vectors, alphas, base):
        d = real(model, ref_ids, layer, vectors, alphas, base)
        # row 0 of the batch (the first vector) answers like a threshold: ΔCE ∝ (α / a*)⁶ · 0.5
        first = (vectors - v[0]).abs().amax(1) < 1e-6
        return torch.where(first, 0.5 * (alphas / 40.0) ** 6, d)

    am.delta_ce = cubic_for_row0
    try:
        missed = am.loss_matched_alpha(tiny_hf, ref, 1, v, symmetric=False)
        fixed = am.loss_matched_alpha(tiny_hf, ref, 1, v, symmetric=False, refine=6)
    finally:
        am.delta_ce = real
    assert abs(float(missed.dce[0]) - 0.5) > 0.1  # the solves alone miss the threshold
    assert abs(float(fixed.dce[0]) - 0.5) <= 0.1 and abs(float(fixed.alpha[0]) - 40.0) < 4.0
    assert torch.equal(fixed.alpha[1:], plain.alpha[1:]) and torch.equal(fixed.dce[1:], plain.dce[1:])
    assert torch.equal(missed.alpha[1:], plain.alpha[1:])
