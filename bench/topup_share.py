"""What share of a pack's features an adaptive budget would top up, and so what it would cost.

    python -m bench.topup_share [PACK_DIR] [--features 32] [--rollouts 16] [--over 20,30,40]

Measures random features of the pack (any density, live or not, as the effects stage does) at
their stored α on ``--rollouts`` rollouts per prompt with a fresh seed, counts each one's contested
targets (within 2 SE of its top-10 boundary; steering_core.measure.allocation) and prints, per
threshold, the share above it and the mean rollouts per feature a ``[topup]`` to the pack's own
budget would give. Prints JSON lines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import emit, log, open_measured_pack
from steering_core.measure.allocation import contested_targets
from steering_core.measure.effects import EffectSpec, baseline_rows, measure_effects

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pack", nargs="?", default=str(ROOT / "cache" / "pack"))
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rollouts", type=int, default=16, help="the base budget's rollouts per prompt")
    ap.add_argument("--over", default="20,30,40", help="contested_over thresholds to report")
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--precision", default=None, help="fp32 or bf16 (default: the pack's)")
    args = ap.parse_args(argv)
    pack, full, model, sae, layer = open_measured_pack(Path(args.pack), args.precision)
    from steering_core.pack.distributed.work import unit_rows

    alpha = dict(pack.con.execute("SELECT feature_id, alpha FROM features WHERE alpha IS NOT NULL").fetchall())
    pack.close()
    rng = np.random.default_rng(args.seed)
    ids = sorted(rng.choice(sorted(alpha), size=min(args.features, len(alpha)), replace=False).tolist())
    spec = EffectSpec(**{**full.to_dict(), "rollouts_per_prompt": args.rollouts,
                         "baseline_rollouts_per_prompt": args.rollouts})
    t0 = time.perf_counter()
    log(f"baseline: {spec.rows_per_vector} rows")
    rows = baseline_rows(model, sae, layer, spec, args.seed)
    parts = []
    k = spec.vectors_per_call
    for i in range(0, len(ids), k):
        log(f"features {i + 1}-{min(len(ids), i + k)} of {len(ids)}")
        chunk = ids[i:i + k]
        parts.append(measure_effects(model, sae, layer, unit_rows(sae, chunk), [alpha[f] for f in chunk], spec, rows,
                                     args.seed))
    effect = torch.cat([p.effect for p in parts])
    se = torch.cat([p.se for p in parts])
    n_con = contested_targets(effect, se)
    n_p, r1, r2 = len(spec.prompts), args.rollouts, full.rollouts_per_prompt
    for c in (int(x) for x in args.over.split(",")):
        share = float((n_con > c).float().mean())
        emit("topup_share", share, "of features", contested_over=c, features=len(ids), base_rollouts=n_p * r1,
             topped_rollouts=n_p * r2, mean_rollouts=n_p * (r1 + (r2 - r1) * share),
             cost_vs_full=(r1 + (r2 - r1) * share) / r2)
    emit("contested_median", float(n_con.float().median()), "targets", contested=n_con.tolist(), ids=ids)
    emit("topup_share_seconds", time.perf_counter() - t0, "s", features=len(ids))


if __name__ == "__main__":
    main()
