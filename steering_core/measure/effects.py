"""Feature effects ([Chalnev 2024] §3; docs/design.md §Feature effects): what steering with a
vector does to the SAE features the model computes afterwards, averaged over generated positions.

The measurement is batched: each generate call steers many vectors at once (one per batch row),
every vector sees the same prompts and the same random numbers (a paired design, so differences
are not sampling noise between vectors), and the unsteered baseline is measured once and reused.
Residuals are read at the steered layer *before* the steering is added, during generation itself:
steering at block l never changes what blocks ≤ l compute, so this equals an unsteered re-run of
the rollout up to block l (the paper's second pass) at no extra cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

from steering_core.errors import SteeringError
from steering_core.model.generation import GenerationConfig, generate
from steering_core.model.steering import recording, steering

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel

#: The short open prompts of [Chalnev 2024] §3 (docs/references.md).
SAETS_PROMPTS = [
    "I think", "Breaking news", "Last night", "For sale", "The weather", "Dear Sir/Madam",
    "Preheat the oven", "It's interesting that", "Assistant:", "I went up to", "New study suggests",
    "Once upon a time", "My favorite", "In the beginning",
]


@dataclass
class EffectSpec:
    """How rollouts are drawn. Defaults are the CPU budget of the embedded pack (see its meta)."""

    prompts: list[str] = field(default_factory=lambda: list(SAETS_PROMPTS))
    rollouts_per_prompt: int = 1
    new_tokens: int = 16  # generated positions averaged over
    baseline_rollouts_per_prompt: int = 16
    top_k: int = 50
    temperature: float = 1.0
    max_rows: int = 256  # rows per generate call

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def rows_per_vector(self) -> int:
        return len(self.prompts) * self.rollouts_per_prompt

    @property
    def vectors_per_call(self) -> int:
        return max(1, self.max_rows // self.rows_per_vector)


def _row_plan(spec: EffectSpec, rollouts: int, seed: int) -> tuple[list[str], list[int]]:
    prompts, seeds = [], []
    for p_i, p in enumerate(spec.prompts):
        for r in range(rollouts):
            prompts.append(p)
            seeds.append(seed * 1_000_003 + p_i * 10_007 + r)
    return prompts, seeds


def generated_feature_means(model: SteerableModel, sae: LoadedSAE, layer: int, prompts: list[str], seeds: list[int],
                            spec: EffectSpec, group: int, steer_set=None, on_step=None) -> torch.Tensor:
    """Generate one batch and return the SAE feature means over generated positions, averaged over
    consecutive groups of ``group`` rows: ``[rows // group, d_sae]``."""
    cfg = GenerationConfig(max_new_tokens=spec.new_tokens + 1, temperature=spec.temperature, top_k=spec.top_k,
                           stop_at_eos=False)
    with recording(model, [layer], before_steering=True) as chunks:
        generate(model, prompts, cfg, steering=steer_set, row_seeds=seeds, on_step=on_step)
    steps = chunks[layer][1:]  # the prefill chunk holds prompt positions: excluded
    if len(steps) != spec.new_tokens:
        raise SteeringError(f"expected {spec.new_tokens} generated positions, got {len(steps)}.")
    x = torch.cat(steps, 1).float()  # [rows, new_tokens, d]
    with torch.no_grad():
        feats = sae.encode(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
    per_row = feats.mean(1)
    return per_row.view(-1, group, per_row.shape[-1]).mean(1)


def measure_baseline(model: SteerableModel, sae: LoadedSAE, layer: int, spec: EffectSpec,
                     seed: int = 0) -> torch.Tensor:
    """Mean unsteered feature activation over generated positions: the shared baseline."""
    prompts, seeds = _row_plan(spec, spec.baseline_rollouts_per_prompt, seed)
    total = torch.zeros(sae.d_sae)
    n = 0
    step = max(1, spec.max_rows)
    for i in range(0, len(prompts), step):
        ps, ss = prompts[i:i + step], seeds[i:i + step]
        total += generated_feature_means(model, sae, layer, ps, ss, spec, group=len(ps)).squeeze(0) * len(ps)
        n += len(ps)
    return total / n


def steered_feature_means(model: SteerableModel, sae: LoadedSAE, layer: int, vectors: torch.Tensor,
                          alphas: torch.Tensor | Sequence[float], spec: EffectSpec, seed: int = 0,
                          on_step=None) -> torch.Tensor:
    """Mean feature activations under steering, one batch row per (vector, prompt, rollout):
    ``[n_vectors, d_sae]``. Call with at most ``spec.vectors_per_call`` vectors per batch.
    ``on_step(step, total)`` follows the decoding steps."""
    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(vectors.shape[0]).clone()
    rows = spec.rows_per_vector
    prompts, seeds = _row_plan(spec, spec.rollouts_per_prompt, seed)
    prompts, seeds = prompts * vectors.shape[0], seeds * vectors.shape[0]
    st = steering(model, (layer, vectors.repeat_interleave(rows, 0), alphas.repeat_interleave(rows, 0)))
    return generated_feature_means(model, sae, layer, prompts, seeds, spec, group=rows, steer_set=st, on_step=on_step)


def measure_effects(model: SteerableModel, sae: LoadedSAE, layer: int, vectors: torch.Tensor, alphas, spec: EffectSpec,
                    baseline: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Effects ``[n_vectors, d_sae]`` = steered means − baseline, batched ``vectors_per_call`` at a time."""
    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(vectors.shape[0]).clone()
    out = []
    k = spec.vectors_per_call
    for i in range(0, vectors.shape[0], k):
        out.append(steered_feature_means(model, sae, layer, vectors[i:i + k], alphas[i:i + k], spec, seed))
    return torch.cat(out) - baseline.unsqueeze(0)


def measure_effects_naive(model: SteerableModel, sae: LoadedSAE, layer: int, vectors: torch.Tensor, alphas,
                          spec: EffectSpec, baseline: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The one-vector-at-a-time reference (the paper's loop): generate one vector's rollouts, then
    re-run them unsteered up to ``layer`` and encode. Same prompts and seeds as the batched path."""
    from steering_core.model.steering import record_residuals

    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(vectors.shape[0]).clone()
    prompts, seeds = _row_plan(spec, spec.rollouts_per_prompt, seed)
    cfg = GenerationConfig(max_new_tokens=spec.new_tokens + 1, temperature=spec.temperature, top_k=spec.top_k,
                           stop_at_eos=False)
    out = []
    for v, a in zip(vectors, alphas):
        res = generate(model, prompts, cfg, steering=[(layer, v, float(a))], row_seeds=seeds)
        ids, mask = model.tokenize(prompts)
        gen = torch.tensor([t[:spec.new_tokens] for t in res.token_ids], dtype=ids.dtype)
        full = torch.cat([ids, gen], 1)
        fmask = torch.cat([mask, torch.ones_like(gen)], 1)
        acts = record_residuals(model, full.to(model.device), fmask.to(model.device), [layer])[layer]
        x = acts[:, ids.shape[1]:].float()
        with torch.no_grad():
            feats = sae.encode(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
        out.append(feats.mean(1).mean(0))
    return torch.stack(out) - baseline.unsqueeze(0)


def top_effects(effects: torch.Tensor, k: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and values of the ``k`` largest |effect| per row (ties by index)."""
    k = min(k, effects.shape[-1])
    idx = effects.abs().topk(k, dim=-1).indices
    return idx, effects.gather(-1, idx)


def relative_effect(effects: torch.Tensor, baseline: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """effect / (baseline activation + ε): surfaces features that go from silent to active."""
    return effects / (baseline.unsqueeze(0) + eps)
