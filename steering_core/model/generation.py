"""Batched, reproducible, streamable generation with optional steering.

Why a hand-written KV-cache loop rather than ``model.generate``: it is as fast (see
``bench/generation.py``, which times both), it gives each row its **own random stream** (row i
samples with ``seed + i`` whatever else is in the batch, so a steered and an unsteered row with
the same seed differ only by the steering), it streams tokens to the UI one step at a time, and
it runs unchanged on Hugging Face and TransformerLens backends.

Steering is applied around each forward call only (never across a ``yield``), so a consumer of
:func:`stream` that runs other forward passes between steps sees an unsteered model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch

from steering_core.errors import GenerationError
from steering_core.model.steering import Steering, steer
from steering_core.model.steering import steering as build_steering
from steering_core.names import unencodable_at

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel

#: Hard ceiling on new tokens per call; larger requests are clamped and the result says so.
MAX_NEW_TOKENS = 1024
#: Hard ceiling on rows per call (the UI offers far fewer).
MAX_BATCH = 1024


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample. ``temperature == 0`` or ``greedy=True`` means argmax decoding."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    seed: int = 0
    stop_at_eos: bool = True

    @property
    def is_greedy(self) -> bool:
        # below 1e-5, dividing logits by the temperature overflows float32: that is argmax anyway
        return self.greedy or self.temperature < 1e-5


@dataclass
class GenerationStep:
    """One decoding step as seen by a streaming consumer."""

    step: int
    new_tokens: list[int | None]  # None for rows already finished
    token_ids: list[list[int]]  # generated ids so far, per row
    finished: list[bool]
    texts: list[str]
    prompt_lengths: list[int] = field(default_factory=list)


@dataclass
class GenerationResult:
    prompts: list[str]
    texts: list[str]
    token_ids: list[list[int]]
    prompt_lengths: list[int]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def n_generated(self) -> int:
        return sum(len(t) for t in self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        return self.n_generated / self.seconds if self.seconds > 0 else float("nan")


def check_config(model: SteerableModel, config: GenerationConfig) -> tuple[GenerationConfig, list[str]]:
    """Validate a config; clamp what can be clamped and say so; raise on the rest."""
    notes: list[str] = []
    t = config.temperature
    if not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise GenerationError(f"temperature must be a finite number ≥ 0, got {t!r}.")
    if config.top_k is not None and (not isinstance(config.top_k, int) or config.top_k < 1):
        raise GenerationError(f"top_k must be a positive integer or None, got {config.top_k!r}.")
    if config.top_p is not None and (
        not isinstance(config.top_p, (int, float)) or not math.isfinite(config.top_p) or not 0 < config.top_p <= 1
    ):
        raise GenerationError(f"top_p must be in (0, 1], got {config.top_p!r}.")
    n = config.max_new_tokens
    if isinstance(n, float) and math.isfinite(n):
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool):
        raise GenerationError(f"max_new_tokens must be an integer, got {config.max_new_tokens!r}.")
    if n < 1:
        notes.append(f"max_new_tokens {n} raised to 1.")
        n = 1
    limit = min(MAX_NEW_TOKENS, max(1, model.n_ctx - 8))
    if n > limit:
        notes.append(f"max_new_tokens {n} clamped to {limit} (the most this model and app allow per call).")
        n = limit
    if not isinstance(config.seed, int) or isinstance(config.seed, bool):
        raise GenerationError(f"seed must be an integer, got {config.seed!r}.")
    return GenerationConfig(
        max_new_tokens=n, temperature=float(t), top_k=config.top_k, top_p=config.top_p,
        greedy=config.greedy, seed=config.seed, stop_at_eos=config.stop_at_eos,
    ), notes


def _check_prompts(model: SteerableModel, prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise GenerationError("No prompts given.")
    if len(prompts) > MAX_BATCH:
        raise GenerationError(f"{len(prompts)} prompts exceed the limit of {MAX_BATCH} rows per call.")
    for p in prompts:
        if not isinstance(p, str):
            raise GenerationError(f"Prompts must be strings, got {type(p).__name__}.")
        if not p.strip():
            raise GenerationError("The prompt is empty: type some text to continue.")
        if unencodable_at(p) is not None:
            raise GenerationError("The prompt contains a character that cannot be encoded (an unpaired surrogate at "
                                  f"position {unencodable_at(p)}, usually from a broken copy and paste); remove it.")
    return prompts


def sample_next(
    logits: torch.Tensor, config: GenerationConfig, generators: list[torch.Generator]
) -> torch.Tensor:
    """Pick one token per row; each row draws one uniform number from its own generator.

    Inverse-CDF sampling with a per-row uniform makes a row's sample depend only on its own
    logits and seed, never on the rest of the batch.
    """
    if config.is_greedy:
        return logits.argmax(-1)
    u = torch.stack([torch.rand((), generator=g) for g in generators])
    if config.top_k is not None and config.top_k < logits.shape[-1] and (config.top_p is None or config.top_p >= 1):
        return _sample_top_k(logits, config, u)
    logits = logits.float() / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if config.top_p is not None and config.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        sorted_p = sorted_p.masked_fill(before >= config.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    cdf = probs.cumsum(-1)
    u = u.to(cdf.device, cdf.dtype)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).squeeze(1)
    # never pick a zero-probability token at the clamp edge
    idx = idx.clamp(max=probs.shape[-1] - 1)
    zero = probs.gather(1, idx.unsqueeze(1)).squeeze(1) <= 0
    if zero.any():
        idx = torch.where(zero, probs.argmax(-1), idx)
    return idx


def _sample_top_k(logits: torch.Tensor, config: GenerationConfig, u: torch.Tensor) -> torch.Tensor:
    """Top-k inverse-CDF sampling on the k candidates only (softmax, cumsum and search over k
    values instead of the whole vocabulary, which dominated sampling time for big batches). The
    candidates are walked in vocabulary order, as the full-vocabulary walk does, so a row's token
    for a given uniform is the same either way (barring exact ties at the k-th logit)."""
    vals, idx = torch.topk(logits, config.top_k, dim=-1)
    idx, order = idx.sort(dim=-1)
    vals = vals.gather(-1, order).float() / config.temperature
    probs = torch.softmax(vals, dim=-1)
    cdf = probs.cumsum(-1)
    j = torch.searchsorted(cdf, (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(1)).squeeze(1)
    j = j.clamp(max=probs.shape[-1] - 1)
    zero = probs.gather(1, j.unsqueeze(1)).squeeze(1) <= 0  # never a zero-probability candidate
    if zero.any():
        j = torch.where(zero, probs.argmax(-1), j)
    return idx.gather(1, j.unsqueeze(1)).squeeze(1)


def stream(
    model: SteerableModel,
    prompts: Sequence[str] | str,
    config: GenerationConfig = GenerationConfig(),
    steering: Steering | Sequence | None = None,
    row_seeds: Sequence[int] | None = None,
    notes: list[str] | None = None,
    decode_texts: bool = True,
) -> Iterator[GenerationStep]:
    """Yield one :class:`GenerationStep` per decoding step (for live UIs).

    ``prompts`` are final strings (apply :meth:`SteerableModel.format_prompt` first for chat).
    ``row_seeds`` overrides the default per-row seeds ``config.seed + i``. Clamping notes are
    appended to ``notes`` if given. ``decode_texts=False`` skips per-step decoding (bulk jobs).
    """
    prompts = _check_prompts(model, prompts)
    config, msgs = check_config(model, config)
    if notes is not None:
        notes.extend(msgs)
    if steering is not None and not isinstance(steering, Steering):
        steering = build_steering(model, *steering)
    if steering is not None and steering.rows is not None and steering.rows != len(prompts):
        raise GenerationError(f"Steering has {steering.rows} per-row vectors for {len(prompts)} prompts.")
    seeds = list(row_seeds) if row_seeds is not None else [config.seed + i for i in range(len(prompts))]
    if len(seeds) != len(prompts):
        raise GenerationError(f"{len(seeds)} seeds for {len(prompts)} prompts.")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    ids, mask = model.tokenize(prompts)
    room = model.n_ctx - ids.shape[1]
    if room < 1:
        raise GenerationError(f"The prompt is {ids.shape[1]} tokens long; {model.name} reads at most {model.n_ctx}.")
    max_new = min(config.max_new_tokens, room)
    if max_new < config.max_new_tokens and notes is not None:
        notes.append(f"max_new_tokens reduced to {max_new} to fit the model's context of {model.n_ctx}.")
    prompt_lengths = [int(n) for n in mask.sum(-1)]
    eos = model.eos_token_id
    pad = model.pad_token_id
    batch = len(prompts)
    out: list[list[int]] = [[] for _ in range(batch)]
    finished = torch.zeros(batch, dtype=torch.bool)

    with torch.no_grad():
        with steer(model, steering):
            logits, state = model.backend.start(ids, mask)
        for step in range(max_new):
            nxt = sample_next(logits, config, generators).cpu()
            nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
            new: list[int | None] = []
            for i in range(batch):
                if finished[i]:
                    new.append(None)
                    continue
                tok = int(nxt[i])
                if config.stop_at_eos and eos is not None and tok == eos:
                    finished[i] = True
                    new.append(None)
                    continue
                out[i].append(tok)
                new.append(tok)
            last = step == max_new - 1 or bool(finished.all())
            yield GenerationStep(
                step=step,
                new_tokens=new,
                token_ids=[list(r) for r in out],
                finished=[bool(f) or last for f in finished],
                texts=[model.decode(r) for r in out] if decode_texts else [],
                prompt_lengths=prompt_lengths,
            )
            if last:
                break
            with steer(model, steering):
                logits = model.backend.step(nxt.to(model.device), state)


def generate(
    model: SteerableModel,
    prompts: Sequence[str] | str,
    config: GenerationConfig = GenerationConfig(),
    steering: Steering | Sequence | None = None,
    row_seeds: Sequence[int] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Generate completions for a batch of prompts (steered if ``steering`` is given).

    ``on_step(step, max_new_tokens)`` runs after every decoding step: a progress bar, and the
    place a caller may raise to cancel (hooks are removed on the way out)."""
    prompts = _check_prompts(model, prompts)
    notes: list[str] = []
    t0 = time.perf_counter()
    token_ids: list[list[int]] = [[] for _ in prompts]
    lengths: list[int] = []
    for i, ev in enumerate(stream(model, prompts, config, steering, row_seeds, notes, decode_texts=False)):
        token_ids, lengths = ev.token_ids, ev.prompt_lengths
        if on_step is not None:
            on_step(i + 1, config.max_new_tokens)
    seconds = time.perf_counter() - t0
    return GenerationResult(
        prompts=prompts,
        texts=[model.decode(r) for r in token_ids],
        token_ids=[list(r) for r in token_ids],
        prompt_lengths=lengths,
        seconds=seconds,
        notes=notes,
    )
