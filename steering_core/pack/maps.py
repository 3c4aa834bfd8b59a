"""2-D maps of features (UMAP over decoder directions or over effect vectors), plus a coarse
clustering to colour them. Seeded, so a rebuilt pack draws the same map.

Below :data:`UMAP_MIN_POINTS` points the map is the first two principal components of the
unit-normalised rows instead: UMAP's 15-neighbour graph says little about a few dozen points, and
compiling its kernels costs 15-20 s, most of a small pack's build."""

from __future__ import annotations

import numpy as np

#: Fewer points than this are mapped by PCA (:func:`pca_2d`), not UMAP.
UMAP_MIN_POINTS = 100


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the unit-normalised rows (cosine geometry, as UMAP's
    metric), with each axis's sign fixed so the largest |coordinate| is positive (deterministic)."""
    n = x.shape[0]
    out = np.zeros((n, 2), np.float32)
    if n < 2:
        return out
    xn = np.asarray(x, dtype=np.float64)
    xn = xn / np.maximum(np.linalg.norm(xn, axis=1, keepdims=True), 1e-12)
    xc = xn - xn.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    k = min(2, u.shape[1])
    y = u[:, :k] * s[:k]
    for j in range(k):
        if y[np.argmax(np.abs(y[:, j])), j] < 0:
            y[:, j] = -y[:, j]
    out[:, :k] = y
    return out


def map_method(n: int) -> str:
    return "umap" if n >= UMAP_MIN_POINTS else "pca"


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """UMAP with cosine distance (directions, not magnitudes, are what features share); PCA for
    fewer than :data:`UMAP_MIN_POINTS` points."""
    n = x.shape[0]
    if map_method(n) == "pca":
        return pca_2d(x)
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, metric="cosine",
                        random_state=seed, n_jobs=1, init="spectral" if n > 16 else "random")
    return reducer.fit_transform(np.asarray(x, dtype=np.float32)).astype(np.float32)


def clusters(x: np.ndarray, k: int = 24, seed: int = 0) -> np.ndarray:
    """KMeans on unit-normalised rows; labels 0..k-1."""
    from sklearn.cluster import KMeans

    n = x.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    k = max(1, min(k, n))
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(xn).astype(np.int64)
