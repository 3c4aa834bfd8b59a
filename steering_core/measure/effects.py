"""Feature effects ([Chalnev 2024] §3; docs/design.md §Feature effects): what steering with a
vector does to the SAE features the model computes afterwards, averaged over generated positions.

The measurement is batched: each generate call steers many vectors at once (one per batch row),
and every vector sees the same prompts and the same random numbers. The unsteered baseline is
measured once on the same rows, and each steered row is compared with its unsteered twin: with
counter-based Gumbel sampling (:mod:`steering_core.model.sampling`) the twins pick the same token
wherever steering has not changed the outcome, so their difference carries far less sampling noise
than two independent rollouts (docs/design.md §Coupled rollouts). Every effect comes with a
standard error from the spread of those paired differences within each prompt.
Residuals are read at the steered layer *before* the steering is added, during generation itself:
steering at block l never changes what blocks ≤ l compute, so this equals an unsteered re-run of
the rollout up to block l (the paper's second pass) at no extra cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

from steering_core.errors import SteeringError
from steering_core.model.generation import GenerationConfig, generate
from steering_core.model.recording import recording
from steering_core.model.sampling import row_seed
from steering_core.model.steering import steering

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
    """How rollouts are drawn. ``rollouts_per_prompt`` steered rows per prompt per vector; the baseline
    uses the same prompts and seeds (``baseline_rollouts_per_prompt`` must be at least as many), so
    each steered row has an unsteered twin that shares its sampling noise (a paired design)."""

    prompts: list[str] = field(default_factory=lambda: list(SAETS_PROMPTS))
    rollouts_per_prompt: int = 16
    new_tokens: int = 12  # generated positions averaged over
    baseline_rollouts_per_prompt: int = 16
    top_k: int = 50
    temperature: float = 1.0
    max_rows: int = 224  # rows per generate call

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def rows_per_vector(self) -> int:
        return len(self.prompts) * self.rollouts_per_prompt

    @property
    def vectors_per_call(self) -> int:
        return max(1, self.max_rows // self.rows_per_vector)

    def check(self) -> None:
        if self.rollouts_per_prompt < 1 or self.new_tokens < 1 or not self.prompts:
            raise SteeringError("An effect measurement needs at least one prompt, rollout and token.")
        if self.baseline_rollouts_per_prompt < self.rollouts_per_prompt:
            raise SteeringError(f"baseline_rollouts_per_prompt ({self.baseline_rollouts_per_prompt}) must be at least "
                                f"rollouts_per_prompt ({self.rollouts_per_prompt}): every steered row needs its "
                                "unsteered twin.")


@dataclass
class EffectEstimate:
    """Effects ``[n, d_sae]`` (steered mean − baseline mean) and their standard errors."""

    effect: torch.Tensor
    se: torch.Tensor

    @staticmethod
    def cat(parts: Sequence[EffectEstimate]) -> EffectEstimate:
        return EffectEstimate(torch.cat([p.effect for p in parts]), torch.cat([p.se for p in parts]))


def row_plan(spec: EffectSpec, rollouts: int, seed: int, first: int = 0) -> tuple[list[str], list[int], list[int]]:
    """Prompts, seeds and prompt index of rollouts ``first … first + rollouts − 1`` of every prompt,
    prompt-major. Rollout ``r`` of prompt ``p`` has the same seed whatever the number of rollouts, so a
    baseline's rows are the twins of a steered measurement's rows, and a later measurement of rollouts
    ``R … 2R − 1`` continues an earlier one of ``0 … R − 1`` (a top-up, :mod:`steering_core.measure.allocation`)."""
    prompts, seeds, which = [], [], []
    for p_i, p in enumerate(spec.prompts):
        for r in range(first, first + rollouts):
            prompts.append(p)
            seeds.append(row_seed(seed, p_i, r))
            which.append(p_i)
    return prompts, seeds, which


def row_feature_means(model: SteerableModel, sae: LoadedSAE, layer: int, prompts: list[str], seeds: list[int],
                      spec: EffectSpec, steer_set=None, on_step=None) -> torch.Tensor:
    """Generate one batch and return each row's SAE feature means over its generated positions:
    ``[rows, d_sae]``."""
    cfg = GenerationConfig(max_new_tokens=spec.new_tokens, temperature=spec.temperature, top_k=spec.top_k,
                           stop_at_eos=False)
    with recording(model, [layer], before_steering=True) as chunks:
        # the last token runs through block `layer` only: its own residual is all that is read
        generate(model, prompts, cfg, steering=steer_set, row_seeds=seeds, on_step=on_step,
                 share_prefill=True, last_through=layer)
    steps = chunks[layer][1:]  # the prefill chunk holds prompt positions: excluded
    if len(steps) != spec.new_tokens:
        raise SteeringError(f"expected {spec.new_tokens} generated positions, got {len(steps)}.")
    x = torch.cat(steps, 1).float()  # [rows, new_tokens, d]
    with torch.no_grad():
        feats = sae.encode(x.reshape(-1, x.shape[-1])).float().reshape(x.shape[0], x.shape[1], -1)
    return feats.mean(1)


def baseline_rows(model: SteerableModel, sae: LoadedSAE, layer: int, spec: EffectSpec, seed: int = 0,
                  on_step=None) -> torch.Tensor:
    """Unsteered per-row feature means ``[P × baseline rollouts, d_sae]``, prompt-major: the twins of
    every steered row (the first ``rollouts_per_prompt`` of each prompt) and the shared baseline."""
    spec.check()
    prompts, seeds, _ = row_plan(spec, spec.baseline_rollouts_per_prompt, seed)
    step = max(1, spec.max_rows)
    return torch.cat([row_feature_means(model, sae, layer, prompts[i:i + step], seeds[i:i + step], spec,
                                        on_step=on_step) for i in range(0, len(prompts), step)])


def measure_baseline(model: SteerableModel, sae: LoadedSAE, layer: int, spec: EffectSpec,
                     seed: int = 0) -> torch.Tensor:
    """Mean unsteered feature activation over generated positions: the shared baseline."""
    return baseline_rows(model, sae, layer, spec, seed).mean(0)


def twin_rows(base_rows: torch.Tensor, spec: EffectSpec, first: int = 0) -> torch.Tensor:
    """The baseline rows that share prompt and seed with a steered measurement's rows (rollouts
    ``first …`` of each prompt), in its order."""
    per = spec.baseline_rollouts_per_prompt
    if base_rows.shape[0] != len(spec.prompts) * per:
        raise SteeringError(f"The baseline has {base_rows.shape[0]} rows; this measurement needs "
                            f"{len(spec.prompts)} prompts × {per} rollouts.")
    if first < 0 or first + spec.rollouts_per_prompt > per:
        raise SteeringError(f"Rollouts {first}–{first + spec.rollouts_per_prompt - 1} of each prompt need twins, but "
                            f"the baseline has rollouts 0–{per - 1}: raise baseline_rollouts_per_prompt to at least "
                            f"{first + spec.rollouts_per_prompt}.")
    return base_rows.view(len(spec.prompts), per, -1)[:, first:first + spec.rollouts_per_prompt].reshape(
        -1, base_rows.shape[-1])


def paired_estimate(steered: torch.Tensor, twins: torch.Tensor, n_prompts: int) -> EffectEstimate:
    """Effect and standard error from per-row feature means ``steered [n, R, d]`` and their unsteered
    twins ``twins [R, d]`` (prompt-major, ``R = n_prompts × rollouts``): the
    :func:`stratified_mean` of the paired differences."""
    return stratified_mean(steered.double() - twins.double().unsqueeze(0), n_prompts)


def stratified_mean(rows: torch.Tensor, n_prompts: int) -> EffectEstimate:
    """Mean over the rows of ``rows [n, R, d]`` (prompt-major, ``R = n_prompts × rollouts``) and its
    standard error.

    The variance is estimated within prompts (the design is stratified by prompt: every vector
    sees every prompt equally often, so between-prompt variation is not noise): SE² = Σ_p s_p² /
    n_p / P², with s_p² the unbiased variance of prompt p's rows. With one rollout per prompt
    there is no within-prompt spread, and the SE falls back to the spread over all rows. Used for
    paired differences (effects) and for plain unsteered rows (the baseline activation)."""
    d = rows.double()
    n, count, dim = d.shape
    per = count // n_prompts
    if per * n_prompts != count:
        raise SteeringError(f"{count} rows cannot be {n_prompts} prompts × an equal number of rollouts.")
    mean = d.mean(1)
    if per >= 2:
        var = d.view(n, n_prompts, per, dim).var(2, unbiased=True)  # [n, P, dim]
        se = (var.sum(1) / per).sqrt() / n_prompts
    elif count >= 2:
        se = d.std(1, unbiased=True) / count ** 0.5
    else:
        se = torch.full_like(mean, float("nan"))
    return EffectEstimate(mean.float(), se.float())


def steered_rows(model: SteerableModel, sae: LoadedSAE, layer: int, vectors: torch.Tensor,
                 alphas: torch.Tensor | Sequence[float], spec: EffectSpec, seed: int = 0,
                 on_step=None, first: int = 0) -> torch.Tensor:
    """Per-row feature means under steering ``[n_vectors, R, d_sae]`` (rollouts ``first …`` of each
    prompt); rows beyond ``max_rows`` are split over several generate calls. ``on_step(step, total)``
    follows the decoding steps."""
    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(vectors.shape[0]).clone()
    rows = spec.rows_per_vector
    prompts, seeds, _ = row_plan(spec, spec.rollouts_per_prompt, seed, first)
    prompts, seeds = prompts * vectors.shape[0], seeds * vectors.shape[0]
    vec_rows, a_rows = vectors.repeat_interleave(rows, 0), alphas.repeat_interleave(rows, 0)
    step = max(1, spec.max_rows)
    calls = (len(prompts) + step - 1) // step
    out = []
    for c, i in enumerate(range(0, len(prompts), step)):
        st = steering(model, (layer, vec_rows[i:i + step], a_rows[i:i + step]))
        tick = None if on_step is None else (lambda k, n, c=c: on_step(c * n + k, calls * n))
        out.append(row_feature_means(model, sae, layer, prompts[i:i + step], seeds[i:i + step], spec, st, tick))
    return torch.cat(out).view(vectors.shape[0], rows, -1)


def measure_effects(model: SteerableModel, sae: LoadedSAE, layer: int, vectors: torch.Tensor, alphas,
                    spec: EffectSpec, base_rows: torch.Tensor, seed: int = 0, on_step=None,
                    first: int = 0) -> EffectEstimate:
    """Effects of ``vectors`` at ``alphas`` with standard errors, against the baseline rows of
    :func:`baseline_rows` measured with the same ``spec`` and ``seed``; ``vectors_per_call`` at a time.
    ``first`` skips the first rollouts of each prompt: measuring rollouts ``R …`` of vectors already
    measured on ``0 … R − 1`` adds independent rollouts that pool into the larger budget's estimate."""
    spec.check()
    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(vectors.shape[0]).clone()
    twins = twin_rows(base_rows, spec, first)
    out = []
    k = spec.vectors_per_call
    for i in range(0, vectors.shape[0], k):
        rows = steered_rows(model, sae, layer, vectors[i:i + k], alphas[i:i + k], spec, seed, on_step, first)
        out.append(paired_estimate(rows, twins, len(spec.prompts)))
    return EffectEstimate.cat(out)


def measure_effects_naive(model: SteerableModel, sae: LoadedSAE, layer: int, vectors: torch.Tensor, alphas,
                          spec: EffectSpec, baseline: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The one-vector-at-a-time reference (the paper's loop): generate one vector's rollouts, then
    re-run them unsteered up to ``layer`` and encode. Same prompts and seeds as the batched path;
    returns mean effects against the baseline mean ``baseline``."""
    from steering_core.model.recording import record_residuals

    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(vectors.shape[0]).clone()
    prompts, seeds, _ = row_plan(spec, spec.rollouts_per_prompt, seed)
    cfg = GenerationConfig(max_new_tokens=spec.new_tokens, temperature=spec.temperature, top_k=spec.top_k,
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
            feats = sae.encode(x.reshape(-1, x.shape[-1])).float().reshape(x.shape[0], x.shape[1], -1)
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
