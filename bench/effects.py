"""Effect-measurement throughput on the embedded model: the batched per-row measurement against a
one-vector-at-a-time loop with the same rollouts (same prompts, seeds and α), in one run.

    python -m bench.effects [--features 18]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import emit, log
from steering_core import load_model
from steering_core.measure.effects import EffectSpec, measure_baseline, measure_effects, measure_effects_naive
from steering_core.model.generation import GenerationConfig, generate
from steering_core.model.saes import load_sae, tiny_sae
from steering_core.pack.reader import default_pack_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=18)
    ap.add_argument("--new-tokens", type=int, default=12)
    args = ap.parse_args()
    model = load_model("embedded")
    pack = default_pack_dir()
    sae = load_sae(str(pack / "sae"), model) if (pack / "sae" / "cfg.json").exists() else tiny_sae(model, 15, d_sae=3072, k=32)
    layer = sae.layer
    spec = EffectSpec(new_tokens=args.new_tokens, baseline_rollouts_per_prompt=1, max_rows=252)
    vecs = torch.stack([sae.decoder_direction(i) for i in range(args.features)])
    alphas = torch.full((args.features,), 0.5 * model.residual_norms()[layer])
    base = measure_baseline(model, sae, layer, spec)
    n_tok = args.features * spec.rows_per_vector * spec.new_tokens
    log(f"{args.features} vectors x {spec.rows_per_vector} rollouts x {spec.new_tokens} tokens, SAE {sae.source}")
    t0 = time.perf_counter()
    batched = measure_effects(model, sae, layer, vecs, alphas, spec, base)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = measure_effects_naive(model, sae, layer, vecs, alphas, spec, base)
    t_naive = time.perf_counter() - t0
    prompts = [p for p in spec.prompts for _ in range(spec.rollouts_per_prompt)] * spec.vectors_per_call
    t0 = time.perf_counter()
    res = generate(model, prompts, GenerationConfig(max_new_tokens=spec.new_tokens + 1, top_k=50, stop_at_eos=False))
    t_raw = time.perf_counter() - t0
    emit("batched_over_naive", t_naive / t_batched, "x", batched_s=round(t_batched, 2), naive_s=round(t_naive, 2),
         max_abs_diff=float((batched - naive).abs().max()))
    emit("rollout_tok_s", n_tok / t_batched, "tok/s")
    emit("raw_generation_tok_s", sum(len(t) for t in res.token_ids) / t_raw, "tok/s")


if __name__ == "__main__":
    main()
