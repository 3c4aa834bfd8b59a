"""Feature maps (steering_core/pack/maps.py): UMAP over enough points puts neighbours together and
is seeded; a few dozen points get PCA, exact and deterministic; a tiny build records which."""

from __future__ import annotations

import numpy as np

from steering_core.pack.maps import UMAP_MIN_POINTS, map_method, pca_2d, umap_2d
from steering_core.storage.db import connect


def _clustered(n_per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight bundles of directions in 16 dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16))
    which = np.repeat(np.arange(3), n_per)
    return (centres[which] + 0.05 * rng.normal(size=(3 * n_per, 16))).astype(np.float32), which


def test_umap_keeps_bundles_apart_and_is_seeded():
    x, which = _clustered(40)
    assert map_method(len(x)) == "umap"
    a, b = umap_2d(x, seed=3), umap_2d(x, seed=3)
    np.testing.assert_array_equal(a, b)
    centroids = np.stack([a[which == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(a[which == c] - centroids[c], axis=1).mean() for c in range(3))
    gaps = [np.linalg.norm(centroids[i] - centroids[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_few_points_get_the_first_two_principal_components():
    x, which = _clustered(10)
    assert len(x) < UMAP_MIN_POINTS and map_method(len(x)) == "pca"
    y = umap_2d(x)
    xn = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    xc = xn - xn.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:2].T
    for j in range(2):  # the same axes up to sign, and the sign is fixed
        np.testing.assert_allclose(np.abs(y[:, j]), np.abs(ref[:, j]), atol=1e-5)
        assert y[np.argmax(np.abs(y[:, j])), j] > 0
    np.testing.assert_array_equal(pca_2d(x), y)
    assert pca_2d(x[:1]).tolist() == [[0.0, 0.0]] and pca_2d(x[:0]).shape == (0, 2)


def test_a_tiny_build_maps_its_features_by_pca(tiny_pack_build):
    con = connect(tiny_pack_build / "pack" / "pack.duckdb", read_only=True)
    try:
        method = con.execute("SELECT value FROM meta WHERE key = 'maps_method'").fetchone()[0]
        xy = np.array(con.execute("SELECT dec_x, dec_y FROM features WHERE live").fetchall(), dtype=float)
    finally:
        con.close()
    assert method == "pca"
    assert np.isfinite(xy).all() and xy.std(0).min() > 0  # spread out, not all at the origin
