"""How the top-10 agreement with a pack's reference grows with the rollout budget: what budget a
pack would need to reach a given ``reference_top10_overlap_median``.

    python -m bench.reference_budget [PACK_DIR] [--rollouts 16,32] [--seed 5000] [--adaptive]

Re-measures the pack's own reference features (ids, α and the reference top-10 lists are in its
``meta``) with fresh seeds at each budget, with the pack's prompts, tokens and sampling, and prints
the median top-10 overlap with the stored reference, raw and specific (the generic response of the
pack subtracted). The largest budget's rows are drawn once; a smaller budget uses the first rollouts
of each prompt, as a build at that budget would. ``--adaptive`` also tries a two-stage budget: the
smallest budget for every feature, the largest only for features whose top-10 boundary is contested
(more than ``c`` targets within 2 SE of the midpoint between the 10th and 11th effects; what the
pack's ``topup`` stage does), and prints the overlap and the mean rollouts per feature for several
``c``. Prints JSON lines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import emit, log, open_measured_pack
from steering_core.measure.allocation import contested_targets
from steering_core.measure.effects import EffectSpec, baseline_rows, paired_estimate, steered_rows, twin_rows

ROOT = Path(__file__).resolve().parent.parent


def overlaps(effect: torch.Tensor, lists: list[list[int]]) -> list[int]:
    top = effect.topk(10, dim=-1).indices.tolist()
    return [len(set(a) & set(b)) for a, b in zip(top, lists)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pack", nargs="?", default=str(ROOT / "cache" / "pack"))
    ap.add_argument("--rollouts", default="16,32", help="rollouts per prompt to try (comma-separated)")
    ap.add_argument("--seed", type=int, default=5000, help="fresh seed (the pack used 0, stability 1)")
    ap.add_argument("--precision", default=None, help="fp32 or bf16 (default: the pack's; fp32 is faster on a "
                                                      "CPU without AVX-512)")
    ap.add_argument("--adaptive", action="store_true", help="also try the smallest budget topped up to the largest "
                                                           "only where the top-10 boundary is contested")
    args = ap.parse_args(argv)
    budgets = sorted({int(x) for x in args.rollouts.split(",")})
    pack_dir = Path(args.pack)
    pack, spec0, model, sae, layer = open_measured_pack(pack_dir, args.precision)
    from steering_core.pack.distributed.work import unit_rows

    per = pack.meta_json("reference_features")
    ids = [int(r["feature"]) for r in per]
    alpha = dict(pack.con.execute("SELECT feature_id, alpha FROM features WHERE feature_id IN "
                                  f"({','.join(map(str, ids))})").fetchall())
    pack.close()
    g = torch.from_numpy(np.load(pack_dir / "generic.npz")["mean"]).float()
    ref_raw = [r["reference_top10"] for r in per]
    ref_spec = [r["reference_specific_top10"] for r in per]
    emit("pack_reference_overlap_median", float(np.median([r["overlap"] for r in per])), "of 10",
         rollouts=spec0.rows_per_vector, features=len(ids))
    top = budgets[-1]
    spec = EffectSpec(prompts=spec0.prompts, rollouts_per_prompt=top, new_tokens=spec0.new_tokens,
                      baseline_rollouts_per_prompt=top, top_k=spec0.top_k, temperature=spec0.temperature,
                      max_rows=spec0.max_rows)
    t0 = time.perf_counter()
    log(f"baseline: {spec.rows_per_vector} rows")
    base = baseline_rows(model, sae, layer, spec, args.seed)
    dirs = unit_rows(sae, ids)
    alphas = torch.tensor([alpha[i] for i in ids], dtype=torch.float32)
    rows = []
    for i, fid in enumerate(ids):
        log(f"feature {fid} ({i + 1}/{len(ids)}): {spec.rows_per_vector} rows")
        rows.append(steered_rows(model, sae, layer, dirs[i:i + 1], alphas[i:i + 1], spec, args.seed))
    steered = torch.cat(rows)  # [n, P*top, d]
    twins = twin_rows(base, spec)
    n_p = len(spec.prompts)
    ests = {}
    for r in budgets:
        keep = lambda x: x.reshape(*x.shape[:-2], n_p, top, x.shape[-1])[..., :r, :].reshape(  # noqa: E731
            *x.shape[:-2], n_p * r, x.shape[-1])
        ests[r] = paired_estimate(keep(steered), keep(twins), n_p)
        est = ests[r].effect
        raw, spc = overlaps(est, ref_raw), overlaps(est - g, ref_spec)
        emit("reference_overlap_median", float(np.median(raw)), "of 10", rollouts=n_p * r, overlaps=raw,
             mean=float(np.mean(raw)))
        emit("specific_reference_overlap_median", float(np.median(spc)), "of 10", rollouts=n_p * r, overlaps=spc)
    if args.adaptive and len(budgets) > 1:
        small, large = ests[budgets[0]], ests[budgets[-1]]
        n_con = contested_targets(small.effect, small.se)
        for c in (10, 20, 30, 40):
            up = n_con > c
            est = torch.where(up.unsqueeze(1), large.effect, small.effect)
            raw, spc = overlaps(est, ref_raw), overlaps(est - g, ref_spec)
            mean_rows = n_p * (budgets[0] + (budgets[-1] - budgets[0]) * float(up.float().mean()))
            emit("adaptive_reference_overlap_median", float(np.median(raw)), "of 10", contested_over=c,
                 mean=float(np.mean(raw)),
                 topped_up=int(up.sum()), mean_rollouts=mean_rows, overlaps=raw,
                 specific_median=float(np.median(spc)), specific_overlaps=spc, contested=n_con.tolist())
    emit("reference_budget_seconds", time.perf_counter() - t0, "s", features=len(ids))


if __name__ == "__main__":
    main()
