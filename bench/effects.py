"""Effect-measurement throughput on the embedded model, in one run:

* ``rollout_tok_s_fp32`` / ``rollout_tok_s_fast`` / ``fast_over_fp32``: the same steered rows
  (same prompts, seeds and α) measured with the model in fp32 and in the fast precision this
  machine gets (:mod:`steering_core.model.precision`: bf16 with AMX-BF16 or AVX512-BF16);
* ``batched_over_naive``: the batched in-generation measurement against the paper's
  one-vector-at-a-time generate-then-re-run loop (fast precision, same rows);
* ``fast_fp32_kl_nats``: mean per-token KL of the fast model's next-token distribution to fp32's.

    python -m bench.effects [--features 4] [--rollouts 4] [--max-rows 224] [--repeats 3]

Timings are medians of ``--repeats`` runs, fp32 and the fast precision alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import emit, log
from steering_core import load_model
from steering_core.measure.effects import EffectSpec, baseline_rows, measure_effects, measure_effects_naive
from steering_core.model.precision import dtype_name, fast_dtype
from steering_core.model.saes import load_sae, tiny_sae
from steering_core.pack.reader import default_pack_dir


def _sae(model):
    pack = default_pack_dir()
    if (pack / "sae" / "cfg.json").exists():
        return load_sae(str(pack / "sae"), model)
    return tiny_sae(model, 15, d_sae=3072, k=32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--rollouts", type=int, default=4, help="rollouts per prompt (14 prompts)")
    ap.add_argument("--new-tokens", type=int, default=12)
    ap.add_argument("--max-rows", type=int, default=224, help="rows per generate call")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per precision, alternating (medians)")
    args = ap.parse_args()
    spec = EffectSpec(new_tokens=args.new_tokens, rollouts_per_prompt=args.rollouts,
                      baseline_rollouts_per_prompt=args.rollouts, max_rows=args.max_rows)
    fast = fast_dtype("cpu")
    setups = {}
    for name, prec in (("fp32", "fp32"), ("fast", dtype_name(fast))):
        model = load_model("embedded", precision=prec)
        sae = _sae(model)
        layer = sae.layer
        vecs = torch.stack([sae.decoder_direction(i) for i in range(args.features)])
        alphas = torch.full((args.features,), 0.5 * model.residual_norms()[layer])
        rows = baseline_rows(model, sae, layer, spec)
        measure_effects(model, sae, layer, vecs[:1], alphas[:1], spec, rows)  # warm-up
        setups[name] = (model, sae, vecs, alphas, rows)
    # alternate the precisions, so a slow spell of this shared machine hits both alike
    times: dict[str, list[float]] = {"fp32": [], "fast": []}
    results = {}
    for _ in range(max(1, args.repeats)):
        for name, (model, sae, vecs, alphas, rows) in setups.items():
            t0 = time.perf_counter()
            est = measure_effects(model, sae, sae.layer, vecs, alphas, spec, rows)
            times[name].append(time.perf_counter() - t0)
            results[name] = (times[name][-1], est, model, sae, vecs, alphas, rows)
    log(f"fp32 {[round(t, 2) for t in times['fp32']]} s, {dtype_name(fast)} {[round(t, 2) for t in times['fast']]} s")
    n_tok = args.features * spec.rows_per_vector * spec.new_tokens
    t32, tf = statistics.median(times["fp32"]), statistics.median(times["fast"])
    rows_per_call = min(spec.max_rows, min(spec.vectors_per_call, args.features) * spec.rows_per_vector)  # largest call
    runs = {"rows_per_call": rows_per_call, "threads": torch.get_num_threads(), "repeats": len(times["fast"])}
    emit("rollout_tok_s_fp32", n_tok / t32, "tok/s", **runs)
    emit("rollout_tok_s_fast", n_tok / tf, "tok/s", precision=dtype_name(fast), **runs)
    emit("fast_over_fp32", t32 / tf, "x", precision=dtype_name(fast),
         per_run=[round(a / b, 2) for a, b in zip(times["fp32"], times["fast"])], **runs)
    diff = (results["fp32"][1].effect - results["fast"][1].effect).abs().max()
    _, est, model, sae, vecs, alphas, rows = results["fast"]
    t0 = time.perf_counter()
    naive = measure_effects_naive(model, sae, sae.layer, vecs, alphas, spec,
                                  rows.view(len(spec.prompts), -1, rows.shape[-1]).mean((0, 1)))
    t_naive = time.perf_counter() - t0
    emit("batched_over_naive", t_naive / tf, "x", batched_s=round(tf, 2), naive_s=round(t_naive, 2),
         max_abs_diff=float((est.effect - naive).abs().max()))
    m32 = results["fp32"][2]
    ids = m32.tokenize(["The weather today is mild, and the forecast for the weekend says rain."])[0]
    with torch.no_grad():
        a = m32.backend.forward(ids, torch.ones_like(ids)).float().log_softmax(-1)
        b = model.backend.forward(ids, torch.ones_like(ids)).float().log_softmax(-1)
    emit("fast_fp32_kl_nats", float((a.exp() * (a - b)).sum(-1).mean()), "nats",
         fast_vs_fp32_effect_max_abs_diff=float(diff))


if __name__ == "__main__":
    main()
