"""Batched, reproducible, streamable generation with optional steering.

Why a hand-written KV-cache loop rather than ``model.generate``: it is as fast (see
``bench/generation.py``, which times both), it gives each row its **own random stream** (row i
samples with noise keyed by its seed, ``row_seed(seed, i)`` unless given, whatever else is in the
batch; a steered and an unsteered row with the same seed share that noise, so they differ only by
what the steering changed: :mod:`steering_core.model.sampling`), it streams tokens to the UI one
step at a time, and it runs unchanged on Hugging Face and TransformerLens backends.

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
from steering_core.model.recording import run_through
from steering_core.model.sampling import row_seeds as default_row_seeds
from steering_core.model.sampling import sample_next
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
    ``row_seeds`` overrides the default per-row seeds ``row_seed(config.seed, i)``. Clamping notes
    are appended to ``notes`` if given. ``decode_texts=False`` skips per-step decoding.
    """
    run = _Run(model, prompts, config, steering, row_seeds, notes)
    out: list[list[int]] = [[] for _ in range(run.batch)]
    for step, nxt, fresh, finished, last in run.steps():
        new: list[int | None] = [None] * run.batch
        for i in torch.nonzero(fresh).flatten().tolist():
            out[i].append(int(nxt[i]))
            new[i] = out[i][-1]
        yield GenerationStep(
            step=step,
            new_tokens=new,
            token_ids=[list(r) for r in out],
            finished=[bool(f) or last for f in finished],
            texts=[model.decode(r) for r in out] if decode_texts else [],
            prompt_lengths=run.prompt_lengths,
        )


class _Run:
    """One batched decoding run: validated inputs, then :meth:`steps` on whole tensors (no per-row
    Python in the loop, so the loop keeps up once the matmuls are fast)."""

    def __init__(self, model: SteerableModel, prompts, config: GenerationConfig, steering, row_seeds, notes,
                 share_prefill: bool = False, last_through: int | None = None):
        self.model = model
        self.share_prefill = share_prefill
        if last_through is not None and (isinstance(last_through, bool) or not isinstance(last_through, int)
                                         or not 0 <= last_through < model.n_layers):
            raise GenerationError(f"last_through must be a block index in 0…{model.n_layers - 1}, "
                                  f"not {last_through!r}.")
        self.last_through = last_through
        self.prompts = _check_prompts(model, prompts)
        self.config, msgs = check_config(model, config)
        if notes is not None:
            notes.extend(msgs)
        if steering is not None and not isinstance(steering, Steering):
            steering = build_steering(model, *steering)
        if steering is not None and steering.rows is not None and steering.rows != len(self.prompts):
            raise GenerationError(f"Steering has {steering.rows} per-row vector{'s' if steering.rows != 1 else ''} for "
                                  f"{len(self.prompts)} prompt{'s' if len(self.prompts) != 1 else ''}; give one per prompt.")
        self.steering = steering
        self.batch = len(self.prompts)
        seeds = list(row_seeds) if row_seeds is not None else default_row_seeds(self.config.seed, self.batch)
        if len(seeds) != self.batch:
            raise GenerationError(f"{len(seeds)} seeds for {self.batch} prompts.")
        if any(not -2**63 <= int(s) < 2**63 for s in seeds):
            raise GenerationError("Row seeds must fit a signed 64-bit integer.")
        self.seeds = torch.tensor([int(s) for s in seeds], dtype=torch.int64)
        self.ids, self.mask = model.tokenize(self.prompts)
        room = model.n_ctx - self.ids.shape[1]
        if room < 1:
            raise GenerationError(f"The prompt is {self.ids.shape[1]} tokens long; {model.name} reads at most "
                                  f"{model.n_ctx}.")
        self.max_new = min(self.config.max_new_tokens, room)
        if self.max_new < self.config.max_new_tokens and notes is not None:
            notes.append(f"max_new_tokens reduced to {self.max_new} to fit the model's context of {model.n_ctx}.")
        self.prompt_lengths = [int(n) for n in self.mask.sum(-1)]

    def prefill(self) -> tuple[torch.Tensor, object]:
        """Last-position logits and KV state of every row. With ``share_prefill``, rows with the same
        prompt and the same steering are prefilled once and their state copied: the effect
        measurement runs 32 rollouts of each of 14 two-to-five-token prompts, and prefilling every
        copy was a quarter of its time. In exact arithmetic the copies are the rows a full prefill
        computes; in bf16 a matmul's last bits depend on the batch size, so a rollout can part ways
        with a full prefill's, equal in distribution (docs/design.md §Precision)."""
        model = self.model
        if self.share_prefill and hasattr(model.backend, "select_rows"):
            first, index = _distinct_rows(self.ids, self.mask, self.steering)
            if len(first) < self.batch:
                sub = None if self.steering is None else self.steering.select_rows(first)
                with steer(model, sub):
                    logits, state = model.backend.start(self.ids[first], self.mask[first])
                return logits[index.to(logits.device)], model.backend.select_rows(state, index)
        with steer(model, self.steering):
            return model.backend.start(self.ids, self.mask)

    def steps(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, bool]]:
        """Yield ``(step, tokens, fresh, finished, last)`` per step: ``fresh`` marks rows that got a
        real token this step (not finished, not EOS)."""
        model, config = self.model, self.config
        eos = model.eos_token_id if config.stop_at_eos else None
        pad = model.pad_token_id
        finished = torch.zeros(self.batch, dtype=torch.bool)
        with torch.no_grad():
            logits, state = self.prefill()
            for step in range(self.max_new):
                nxt = sample_next(logits, config, self.seeds, step).cpu()
                nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
                fresh = ~finished
                if eos is not None:
                    hit = fresh & (nxt == eos)
                    finished = finished | hit
                    fresh = fresh & ~hit
                last = step == self.max_new - 1 or bool(finished.all())
                yield step, nxt, fresh, finished, last
                if last:
                    if self.last_through is not None:  # the last tokens' own residuals, up to that block
                        with steer(model, self.steering):
                            run_through(model, self.last_through, lambda: model.backend.step(nxt.to(model.device),
                                                                                              state))
                    break
                with steer(model, self.steering):
                    logits = model.backend.step(nxt.to(model.device), state)


def generate(
    model: SteerableModel,
    prompts: Sequence[str] | str,
    config: GenerationConfig = GenerationConfig(),
    steering: Steering | Sequence | None = None,
    row_seeds: Sequence[int] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    share_prefill: bool = False,
    last_through: int | None = None,
) -> GenerationResult:
    """Generate completions for a batch of prompts (steered if ``steering`` is given).

    ``on_step(step, max_new_tokens)`` runs after every decoding step: a progress bar, and the
    place a caller may raise to cancel (hooks are removed on the way out). ``share_prefill``
    prefills each distinct (prompt, steering) row once (:meth:`_Run.prefill`); a residual recorder
    then sees the prefill of the distinct rows only (the effect measurement skips it).
    ``last_through=l`` feeds the last sampled tokens through blocks ≤ l as well, so a residual
    recorder at block l sees every generated token's own position, without the rest of a step
    (blocks after l, the unembedding and a sample nobody keeps)."""
    notes: list[str] = []
    t0 = time.perf_counter()
    run = _Run(model, prompts, config, steering, row_seeds, notes, share_prefill, last_through)
    toks, keep = [], []
    for step, nxt, fresh, _finished, _last in run.steps():
        toks.append(nxt)
        keep.append(fresh)
        if on_step is not None:
            on_step(step + 1, config.max_new_tokens)
    token_ids: list[list[int]] = [[] for _ in run.prompts]
    if toks:
        t, k = torch.stack(toks, 1).tolist(), torch.stack(keep, 1).tolist()
        token_ids = [[x for x, ok in zip(tr, kr) if ok] for tr, kr in zip(t, k)]
    seconds = time.perf_counter() - t0
    return GenerationResult(
        prompts=run.prompts,
        texts=[model.decode(r) for r in token_ids],
        token_ids=token_ids,
        prompt_lengths=run.prompt_lengths,
        seconds=seconds,
        notes=notes,
    )


def _distinct_rows(ids: torch.Tensor, mask: torch.Tensor, steer_set: Steering | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, index)``: the first row of each distinct (ids, mask, steering) row, and for every row
    the position in ``first`` of its representative."""
    keys = [i.numpy().tobytes() + m.numpy().tobytes() for i, m in zip(ids.cpu(), mask.cpu())]
    if steer_set is not None:
        keys = [k + b"#" + s for k, s in zip(keys, steer_set.row_keys(len(keys)))]
    seen: dict[bytes, int] = {}
    first, index = [], []
    for row, key in enumerate(keys):
        if key not in seen:
            seen[key] = len(first)
            first.append(row)
        index.append(seen[key])
    return torch.tensor(first, dtype=torch.long), torch.tensor(index, dtype=torch.long)
