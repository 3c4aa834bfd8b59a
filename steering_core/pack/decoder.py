"""A pack's SAE decoder, read straight from ``sae/sae_weights.safetensors``.

Why not through sae_lens: the feature browser needs one row (a card's direction) or all rows once
(cosine neighbours, vector comparisons), and reading the tensor itself does either without
loading the SAE or its library: one row is a slice read of the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steering_core.errors import FeatureLookupError

WEIGHTS = "sae_weights.safetensors"


def _weights(sae_dir: Path) -> Path:
    path = Path(sae_dir) / WEIGHTS
    if not path.is_file():
        raise FeatureLookupError(f"This pack has no SAE weights ({path} is missing).")
    return path


def row(sae_dir: Path, feature_id: int) -> np.ndarray:
    """Decoder row ``feature_id`` as float32, as stored (not normalised): a pack without weights or
    without ``W_dec`` is a :class:`FeatureLookupError`."""
    from safetensors import safe_open

    path = _weights(sae_dir)
    with safe_open(str(path), framework="np") as fh:
        if "W_dec" not in fh.keys():
            raise FeatureLookupError(f"{path} has no W_dec tensor.")
        return np.asarray(fh.get_slice("W_dec")[feature_id : feature_id + 1], dtype=np.float32)[0]


def unit_matrix(sae_dir: Path) -> np.ndarray:
    """Every decoder row ``[d_sae, d_model]`` scaled to norm 1 (a zero row stays zero)."""
    from safetensors.numpy import load_file

    path = _weights(sae_dir)
    w = load_file(str(path)).get("W_dec")
    if w is None:
        raise FeatureLookupError(f"{path} has no W_dec tensor.")
    w = np.asarray(w, dtype=np.float32)
    return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
