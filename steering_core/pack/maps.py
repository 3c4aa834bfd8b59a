"""2-D maps of features (UMAP over decoder directions or over effect vectors), plus a coarse
clustering to colour them. Seeded, so a rebuilt pack draws the same map."""

from __future__ import annotations

import numpy as np


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """UMAP with cosine distance (directions, not magnitudes, are what features share)."""
    n = x.shape[0]
    if n < 4:
        return np.zeros((n, 2), np.float32) if n else np.zeros((0, 2), np.float32)
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
