"""The effect approximator of SAE-TS: a linear map ŷ = x·M + b from a unit steering vector to its
measured feature effects. It predicts what any vector will do without generating, and it is what
SAE-TS, pseudoinverse and rotation steering invert (docs/design.md §Effect approximator and
targeted steering)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from steering_core.measure.scores import resample_counts
from steering_core.storage.files import make_readable


@dataclass
class Approximator:
    M: torch.Tensor  # [d_model, d_sae]
    b: torch.Tensor  # [d_sae]
    r2_heldout: float
    ridge: float
    n_train: int
    r2_heldout_se: float = float("nan")  # bootstrap over the held-out features; not saved in the file

    def predict(self, vectors: torch.Tensor) -> torch.Tensor:
        """Predicted effects of unit-normalised ``vectors`` ``[n, d_model]`` → ``[n, d_sae]``."""
        v = vectors.reshape(-1, self.M.shape[0]).float()
        v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return v @ self.M + self.b

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tmp = path.with_name(path.name + ".tmp")
        save_file({"M": self.M.contiguous(), "b": self.b.contiguous()}, str(tmp),
                  metadata={"r2_heldout": str(self.r2_heldout), "ridge": str(self.ridge), "n_train": str(self.n_train)})
        make_readable(tmp)  # safetensors writes 0600
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Approximator":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            return cls(fh.get_tensor("M").float(), fh.get_tensor("b").float(), float(meta.get("r2_heldout", "nan")),
                       float(meta.get("ridge", "0")), int(meta.get("n_train", "0")))


def r2_score(y: torch.Tensor, yhat: torch.Tensor) -> float:
    """Share of the variance of all effect entries (around each target's mean) explained."""
    sse = float(((y - yhat) ** 2).sum())
    sst = float(((y - y.mean(0, keepdim=True)) ** 2).sum())
    return 1.0 - sse / max(sst, 1e-12)


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    xa = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1).double()
    reg = lam * torch.eye(xa.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0.0  # never shrink the bias
    w = torch.linalg.solve(xa.T @ xa + reg, xa.T @ y.double())
    return w[:-1].float(), w[-1].float()


def r2_bootstrap_se(y: torch.Tensor, yhat: torch.Tensor, draws: int = 400, seed: int = 0) -> float:
    """Standard error of :func:`r2_score` from resampling rows (features) with replacement: the
    held-out features are a sample, and a second sample of as many would give another R². NaN
    with fewer than two rows."""
    n = y.shape[0]
    if n < 2:
        return float("nan")
    y64 = y.double()
    w = resample_counts(n, draws, seed)
    sse = w @ ((y64 - yhat.double()) ** 2).sum(1)
    s = w @ y64
    sst = w @ (y64 ** 2).sum(1) - (s * s).sum(1) / n
    return float((1 - sse / sst.clamp(min=1e-12)).std())


def fit_approximator(vectors: torch.Tensor, effects: torch.Tensor, heldout_fraction: float = 0.1, seed: int = 0,
                     ridges: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)) -> Approximator:
    """Least squares (the exact MSE minimiser, instead of Adam's approximation of it) with a ridge.
    Three disjoint sets of features: the ridge is chosen on a validation set, the R² (with its
    bootstrap SE) reported on a held-out set that chose nothing, and the final fit uses every pair."""
    x = vectors.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    y = effects.float()
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = max(1, int(round(n * heldout_fraction)))
    held, rest = perm[:n_held], perm[n_held:]
    n_val = max(1, int(round(len(rest) * heldout_fraction)))
    val, train = rest[:n_val], rest[n_val:]
    best = None
    for lam in ridges:
        m, b = _ridge(x[train], y[train], lam)
        r2 = r2_score(y[val], x[val] @ m + b)
        if best is None or r2 > best[0]:
            best = (r2, lam)
    lam = best[1]
    m, b = _ridge(x[rest], y[rest], lam)
    pred = x[held] @ m + b
    r2, se = r2_score(y[held], pred), r2_bootstrap_se(y[held], pred)
    m, b = _ridge(x, y, lam)
    return Approximator(M=m, b=b, r2_heldout=float(r2), ridge=float(lam), n_train=n, r2_heldout_se=se)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def saets_vector(approx: Approximator, target: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """SAE-TS: s = norm(norm(M t) − λ·norm(M b)) for target weights t over features."""
    mt = approx.M @ target.float()
    mb = approx.M @ approx.b
    return _unit(_unit(mt) - lam * _unit(mb))


def pinv_vector(approx: Approximator, target: torch.Tensor) -> torch.Tensor:
    """Pseudoinverse steering: v = (t/|t| − b)·pinv(M), returned unit-norm."""
    t = target.float()
    t = t / t.norm().clamp(min=1e-12)
    return _unit((t - approx.b) @ torch.linalg.pinv(approx.M))


def rotation_vector(approx: Approximator, w_dec: torch.Tensor, decoder_row: torch.Tensor) -> torch.Tensor:
    """Rotation steering: C = colnorm(M)·rownorm(W_dec), C = UΣVᵀ, R = UVᵀ,
    v = norm(norm(d R) − norm(M b))."""
    m = approx.M / approx.M.norm(dim=0, keepdim=True).clamp(min=1e-12)
    w = w_dec.float() / w_dec.float().norm(dim=1, keepdim=True).clamp(min=1e-12)
    c = m @ w  # [d_model, d_model]
    u, _, vh = torch.linalg.svd(c)
    r = u @ vh
    return _unit(_unit(decoder_row.float() @ r) - _unit(approx.M @ approx.b))
