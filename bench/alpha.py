"""Automatic α against a bisection, on the embedded model ([Garreau 2026]'s quadratic ΔCE;
docs/design.md §Steering strength).

For 10 vectors at block 15 (5 random unit vectors, 5 SAE decoder rows of the shipped pack) the
automatic α (probe, quadratic solve, one verification; one refit when off by more than 20 %) is
compared with a bisection that brings ΔCE on the same reference text to +0.5 nats ± 1 %.

* ``auto_alpha_rel_error``: median |α_auto − α_bisect| / α_bisect (target ≤ 0.10), for the
  symmetric probe (±α₀) and the one-sided probe the pack uses;
* ``auto_alpha_model_evals``: ΔCE evaluations (forward passes over the reference rows) per vector.
"""

from __future__ import annotations

import statistics

import torch

from bench.common import emit, log
from steering_core import load_model, random_unit_vector
from steering_core.measure.alpha import delta_ce, loss_matched_alpha, per_row_loss, reference_ids
from steering_core.pack.reader import open_default_pack

TARGET = 0.5


def bisect(model, ref, layer: int, v: torch.Tensor, base: torch.Tensor, start: float) -> tuple[float, int]:
    """α with ΔCE within ±1 % of TARGET, and how many evaluations it took."""
    def dce(a: float) -> float:
        return float(delta_ce(model, ref, layer, v[None], torch.tensor([a]), base)[0])

    lo, hi, n = 0.0, max(start, 1e-3), 0
    while dce(hi) < TARGET:
        n += 1
        lo, hi = hi, hi * 2
    n += 1
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        d = dce(mid)
        n += 1
        if abs(d - TARGET) <= 0.01 * TARGET:
            return mid, n
        lo, hi = (mid, hi) if d < TARGET else (lo, mid)
    return 0.5 * (lo + hi), n


def main() -> None:
    torch.set_num_threads(2)
    model = load_model("embedded")
    layer = 15
    ref = reference_ids(model)
    base = per_row_loss(model, ref).mean()
    vecs = [random_unit_vector(model.d_model, seed=s) for s in range(5)]
    pack = open_default_pack()
    if pack is not None:
        w = torch.from_numpy(pack.decoder_matrix()).float()
        g = torch.Generator().manual_seed(0)
        for fid in torch.randperm(w.shape[0], generator=g)[:5].tolist():
            vecs.append(w[fid] / w[fid].norm())
    else:
        vecs += [random_unit_vector(model.d_model, seed=s) for s in range(5, 10)]
    v = torch.stack(vecs)
    for symmetric in (True, False):
        res = loss_matched_alpha(model, ref, layer, v, target=TARGET, symmetric=symmetric)
        errs, bis_evals = [], []
        for i in range(len(v)):
            a_ref, n = bisect(model, ref, layer, v[i], base, float(res.alpha[i]))
            errs.append(abs(float(res.alpha[i]) - a_ref) / a_ref)
            bis_evals.append(n)
        probe = "symmetric" if symmetric else "one-sided"
        log(f"{probe}: α auto {[round(float(a), 1) for a in res.alpha]} errors {[round(e, 3) for e in errs]}")
        emit("auto_alpha_rel_error", statistics.median(errs), "ratio", probe=probe, vectors=len(v),
             max=round(max(errs), 4), target="<= 0.10")
        emit("auto_alpha_model_evals", res.evals_per_vector, "evals/vector", probe=probe,
             bisection_evals=statistics.median(bis_evals))


if __name__ == "__main__":
    main()
