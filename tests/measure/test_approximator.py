"""The effect approximator ŷ = unit(x)·M + b and the vectors derived from it (docs/design.md
§Effect approximator and targeted steering), checked against independent float64 NumPy
computations of the design formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steering_core.measure.approximator import (
    Approximator,
    fit_approximator,
    pinv_vector,
    r2_bootstrap_se,
    r2_score,
    rotation_vector,
    saets_vector,
)

D_MODEL, D_SAE, N = 16, 24, 400


def _unit_np(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def synthetic():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(D_MODEL, D_SAE, generator=g)
    b = torch.randn(D_SAE, generator=g)
    x = torch.randn(N, D_MODEL, generator=g) * (0.1 + 5 * torch.rand(N, 1, generator=g))  # arbitrary norms
    y = (x / x.norm(dim=-1, keepdim=True)) @ m + b + 1e-3 * torch.randn(N, D_SAE, generator=g)
    return x, y, m, b


@pytest.fixture(scope="module")
def fitted(synthetic):
    x, y, _, _ = synthetic
    return fit_approximator(x, y)


@pytest.fixture()
def small_approx():
    g = torch.Generator().manual_seed(5)
    return Approximator(M=torch.randn(D_MODEL, D_SAE, generator=g), b=torch.randn(D_SAE, generator=g),
                        r2_heldout=0.9, ridge=0.1, n_train=10)


def test_fit_recovers_m_and_b(fitted, synthetic):
    _, _, m, b = synthetic
    assert fitted.M.shape == (D_MODEL, D_SAE) and fitted.b.shape == (D_SAE,)
    assert torch.allclose(fitted.M, m, atol=1e-2)
    assert torch.allclose(fitted.b, b, atol=1e-2)
    assert fitted.r2_heldout > 0.99
    assert fitted.n_train == N
    assert fitted.ridge in (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def test_fit_without_noise_is_exact_and_unshrunk_bias():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(D_MODEL, D_SAE, generator=g)
    b = 100 + torch.randn(D_SAE, generator=g)  # a large bias: the ridge must not shrink it
    x = torch.randn(N, D_MODEL, generator=g)
    y = (x / x.norm(dim=-1, keepdim=True)) @ m + b
    a = fit_approximator(x, y, ridges=(1e-6,))
    assert torch.allclose(a.b, b, atol=1e-3)
    assert torch.allclose(a.M, m, atol=1e-3)
    assert a.r2_heldout == pytest.approx(1.0, abs=1e-6)


def test_predict_normalises_input(fitted, synthetic):
    x, _, m, b = synthetic
    v = x[:5]
    p = fitted.predict(v)
    assert p.shape == (5, D_SAE)
    assert torch.allclose(fitted.predict(7 * v), p, atol=1e-5)
    assert torch.allclose(p, (v / v.norm(dim=-1, keepdim=True)) @ fitted.M + fitted.b, atol=1e-6)
    assert torch.allclose(p, (v / v.norm(dim=-1, keepdim=True)) @ m + b, atol=3e-2)
    one = fitted.predict(x[0])  # a single [d_model] vector
    assert one.shape == (1, D_SAE) and torch.allclose(one[0], p[0], atol=1e-6)


def test_r2_score():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(50, 4, generator=g)
    assert r2_score(y, y) == 1.0
    assert r2_score(y, y.mean(0, keepdim=True).expand_as(y)) == pytest.approx(0.0, abs=1e-6)
    noise = 0.1 * torch.randn(50, 4, generator=g)
    ref = 1 - float((noise ** 2).sum()) / float(((y - y.mean(0)) ** 2).sum())
    assert r2_score(y, y + noise) == pytest.approx(ref, rel=1e-6)


def test_the_ridge_is_chosen_on_a_validation_set_and_r2_reported_on_features_that_chose_nothing(synthetic):
    """Choosing the ridge on the rows that report R² would flatter it: the reported figure must be
    the one a fit on the other rows, at the ridge the validation rows chose, scores on the held-out
    rows, recomputed here in float64 NumPy."""
    x, y, _, _ = synthetic
    noisy = y + 2.0 * torch.randn(y.shape, generator=torch.Generator().manual_seed(9))  # so the ridge matters
    a = fit_approximator(x, noisy)
    xn = _unit_np(x.double().numpy())
    yn = noisy.double().numpy()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0)).numpy()
    held, rest = perm[:40], perm[40:]
    val, train = rest[:36], rest[36:]

    def ridge(rows, lam):
        xa = np.hstack([xn[rows], np.ones((len(rows), 1))])
        reg = lam * np.eye(xa.shape[1])
        reg[-1, -1] = 0
        return np.linalg.solve(xa.T @ xa + reg, xa.T @ yn[rows])

    def r2(rows, w):
        pred = np.hstack([xn[rows], np.ones((len(rows), 1))]) @ w
        return 1 - ((yn[rows] - pred) ** 2).sum() / ((yn[rows] - yn[rows].mean(0)) ** 2).sum()

    chosen = max((1e-3, 1e-2, 1e-1, 1.0, 10.0), key=lambda lam: r2(val, ridge(train, lam)))
    assert a.ridge == chosen
    assert a.r2_heldout == pytest.approx(r2(held, ridge(rest, chosen)), abs=1e-5)
    assert 0 < a.r2_heldout_se < 0.2


def test_r2_bootstrap_se_matches_the_spread_over_fresh_samples():
    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randn(60, 5, generator=g)
        return y, y + 0.8 * torch.randn(60, 5, generator=g)

    spread = torch.tensor([r2_score(*sample(s)) for s in range(300)]).std().item()
    se = torch.tensor([r2_bootstrap_se(*sample(s)) for s in range(5)]).median().item()
    assert 0.7 < se / spread < 1.4
    y, yhat = sample(0)
    assert np.isnan(r2_bootstrap_se(y[:1], yhat[:1]))


def test_save_load_round_trip(fitted, tmp_path):
    path = tmp_path / "approx.safetensors"
    fitted.save(path)
    assert path.is_file() and not (tmp_path / "approx.safetensors.tmp").exists()
    back = Approximator.load(path)
    assert torch.equal(back.M, fitted.M)
    assert torch.equal(back.b, fitted.b)
    assert back.r2_heldout == fitted.r2_heldout
    assert back.ridge == fitted.ridge and back.n_train == fitted.n_train
    # overwriting in place works (atomic replace)
    other = Approximator(fitted.M * 2, fitted.b, 0.5, 1.0, 3)
    other.save(path)
    assert torch.equal(Approximator.load(path).M, fitted.M * 2)
    assert Approximator.load(path).r2_heldout == 0.5


# ----------------------------------------------------------------------------------------------
# Derived steering vectors vs hand-written formulas (float64 NumPy)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [1.0, 0.0, 0.5])
def test_saets_vector_matches_formula(small_approx, lam):
    g = torch.Generator().manual_seed(3)
    t = torch.zeros(D_SAE)
    t[[2, 7]] = torch.tensor([1.0, 0.5])
    t += 0.01 * torch.rand(D_SAE, generator=g)
    m, b, tn = small_approx.M.double().numpy(), small_approx.b.double().numpy(), t.double().numpy()
    ref = _unit_np(_unit_np(m @ tn) - lam * _unit_np(m @ b))
    s = saets_vector(small_approx, t, lam=lam)
    assert s.shape == (D_MODEL,)
    assert np.allclose(s.numpy(), ref, atol=1e-5)
    assert s.norm().item() == pytest.approx(1.0, abs=1e-5)
    # scaling the target changes nothing
    assert torch.allclose(saets_vector(small_approx, 3 * t, lam=lam), s, atol=1e-6)


def test_pinv_vector_matches_formula(small_approx):
    g = torch.Generator().manual_seed(4)
    t = torch.rand(D_SAE, generator=g)
    m, b, tn = small_approx.M.double().numpy(), small_approx.b.double().numpy(), t.double().numpy()
    ref = _unit_np((tn / np.linalg.norm(tn) - b) @ np.linalg.pinv(m))
    v = pinv_vector(small_approx, t)
    assert v.shape == (D_MODEL,)
    assert np.allclose(v.numpy(), ref, atol=1e-5)
    assert v.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(pinv_vector(small_approx, 10 * t), v, atol=1e-5)


def test_pinv_vector_inverts_an_exact_approximator():
    """When the target is reachable (t/|t| = u·M + b for a unit u), pinv steering returns u."""
    g = torch.Generator().manual_seed(6)
    m = torch.randn(D_MODEL, D_SAE, generator=g, dtype=torch.float64)
    u = torch.randn(D_MODEL, generator=g, dtype=torch.float64)
    u = u / u.norm()
    y = u @ m
    b = -y * 0.1  # then t = u·M + b = 0.9·u·M, and |t| must be 1: rescale M
    m = m / (0.9 * y.norm())
    b = b / (0.9 * y.norm())
    t = u @ m + b
    assert t.norm().item() == pytest.approx(1.0)
    approx = Approximator(m.float(), b.float(), 1.0, 0.0, 1)
    assert torch.allclose(pinv_vector(approx, t.float()), u.float(), atol=1e-4)


def test_rotation_vector_matches_formula(small_approx):
    g = torch.Generator().manual_seed(7)
    w_dec = torch.randn(D_SAE, D_MODEL, generator=g) * (1 + torch.rand(D_SAE, 1, generator=g))
    d = w_dec[3]
    m, b = small_approx.M.double().numpy(), small_approx.b.double().numpy()
    w = w_dec.double().numpy()
    m_cols = m / np.linalg.norm(m, axis=0, keepdims=True)  # each column normalised over d_model
    w_rows = w / np.linalg.norm(w, axis=1, keepdims=True)  # each decoder row normalised
    c = m_cols @ w_rows
    assert c.shape == (D_MODEL, D_MODEL)
    u, _, vh = np.linalg.svd(c)
    r = u @ vh
    assert np.allclose(r @ r.T, np.eye(D_MODEL), atol=1e-10)  # a rotation (orthogonal)
    ref = _unit_np(_unit_np(d.double().numpy() @ r) - _unit_np(m @ b))
    v = rotation_vector(small_approx, w_dec, d)
    assert v.shape == (D_MODEL,)
    assert np.allclose(v.numpy(), ref, atol=1e-4)
    assert v.norm().item() == pytest.approx(1.0, abs=1e-5)
    # the decoder row's own scale does not matter
    assert torch.allclose(rotation_vector(small_approx, w_dec, 5 * d), v, atol=1e-5)
