"""Generation throughput on the embedded model, steered vs unsteered, in one run.

    python -m bench.generation [--tokens 32] [--rounds 3]

Steered rows each carry a *different* random unit vector at the middle layer (the pattern the
effects measurement uses). Rounds alternate unsteered/steered so machine noise hits both alike;
the ratio is taken from the medians. ``live_*`` times the Steer page's steered column (2 rows × 48
tokens) on the plain fp32 linears, on the few-row ones (``model.fewrows``) and with the fused
decoding step too (``model.decode``), alternating, and checks they give the same tokens. ``hf_generate_tok_s_b64`` times Hugging Face's own
``generate`` with an equivalent forward hook, for the record of why the hand-written loop is used.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import SAETS_PROMPTS, emit, log
from steering_core import GenerationConfig, generate, load_model, steering
from steering_core.model.decode import fuse_blocks, unfuse_blocks
from steering_core.model.fewrows import plain_few_rows, use_few_rows


def _prompts(n: int) -> list[str]:
    return [SAETS_PROMPTS[i % len(SAETS_PROMPTS)] for i in range(n)]


def _run(model, batch: int, tokens: int, steered: bool) -> float:
    prompts = _prompts(batch)
    cfg = GenerationConfig(max_new_tokens=tokens, temperature=1.0, top_k=50, seed=0, stop_at_eos=False)
    st = None
    if steered:
        g = torch.Generator().manual_seed(batch)
        vecs = torch.randn(batch, model.d_model, generator=g)
        vecs = vecs / vecs.norm(dim=1, keepdim=True)
        alpha = 0.5 * model.residual_norms()[model.default_layer]
        st = steering(model, (model.default_layer, vecs, alpha))
    t0 = time.perf_counter()
    res = generate(model, prompts, cfg, steering=st)
    dt = time.perf_counter() - t0
    assert res.n_generated == batch * tokens
    return res.n_generated / dt


def _hf_generate(model, batch: int, tokens: int) -> float:
    hf = model.module
    layer = model.backend.layer_module(model.default_layer)
    vecs = torch.randn(batch, model.d_model)
    vecs = 0.5 * model.residual_norms()[model.default_layer] * vecs / vecs.norm(dim=1, keepdim=True)

    def hook(_m, _i, out):
        if isinstance(out, tuple):
            return (out[0] + vecs.unsqueeze(1),) + tuple(out[1:])
        return out + vecs.unsqueeze(1)

    ids, mask = model.tokenize(_prompts(batch))
    handle = layer.register_forward_hook(hook)
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                do_sample=True, top_k=50, temperature=1.0, pad_token_id=model.pad_token_id,
            )
        dt = time.perf_counter() - t0
    finally:
        handle.remove()
    return (out.shape[1] - ids.shape[1]) * batch / dt


def _live(model, rounds: int) -> None:
    """The Steer page's live release: 2 steered rows × 48 tokens on the plain fp32 linears, on the
    few-row ones (``model.fewrows``), and with the fused decoding step as well (``model.decode``)."""
    cfg = GenerationConfig(max_new_tokens=48, temperature=1.0, seed=0, stop_at_eos=False)
    g = torch.Generator().manual_seed(7)
    v = torch.randn(model.d_model, generator=g)
    st = steering(model, (model.default_layer, v / v.norm(), 0.5 * model.residual_norms()[model.default_layer]))
    prompts = [SAETS_PROMPTS[0]] * 2
    kinds = ("plain", "few_rows", "fused")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    tokens: dict[str, list] = {}
    for r in range(rounds):
        for kind in kinds:
            unfuse_blocks(model.module)
            plain_few_rows(model.module)
            if kind != "plain":
                use_few_rows(model.module)
            if kind == "fused":
                fuse_blocks(model.module)
            res = generate(model, prompts, cfg, steering=st)
            times[kind].append(res.seconds)
            tokens[kind] = res.token_ids
            log(f"live round {r}: {kind} {res.seconds:.2f} s")
    med = {k: statistics.median(t) for k, t in times.items()}
    for kind in kinds:
        emit(f"live_2x48_{kind}_s", med[kind], "s")
    emit("live_few_rows_speedup", med["plain"] / med["few_rows"], "ratio")
    emit("live_fused_speedup", med["plain"] / med["fused"], "ratio")
    emit("live_same_tokens", float(tokens["plain"] == tokens["few_rows"] == tokens["fused"]), "bool")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = load_model()
    emit("model_load_s", time.perf_counter() - t0, "s")
    model.residual_norms()
    _run(model, 4, 4, True)  # warm-up
    log(f"threads={torch.get_num_threads()}")
    for batch in (1, 64):
        un, st = [], []
        for r in range(args.rounds):
            un.append(_run(model, batch, args.tokens, False))
            st.append(_run(model, batch, args.tokens, True))
            log(f"b{batch} round {r}: unsteered {un[-1]:.1f} tok/s, steered {st[-1]:.1f} tok/s")
        mu, ms = statistics.median(un), statistics.median(st)
        emit(f"unsteered_tok_s_b{batch}", mu, "tok/s")
        emit(f"steered_tok_s_b{batch}", ms, "tok/s")
        emit(f"steered_over_unsteered_b{batch}", ms / mu, "ratio")
    if model.dtype == torch.float32 and model.device.type == "cpu":
        _live(model, args.rounds)
    if not args.skip_hf:
        hf = statistics.median(_hf_generate(model, 64, args.tokens) for _ in range(2))
        emit("hf_generate_tok_s_b64", hf, "tok/s")
    emit("bench_generation_total_s", time.perf_counter() - t0, "s")


if __name__ == "__main__":
    main()
