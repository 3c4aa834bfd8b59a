"""α sweeps: behaviour and coherence scores of steered rollouts at each α ([Chalnev 2024] §5;
docs/design.md §Offline evaluation).

For each α of a grid, ``samples`` rollouts per prompt are generated with the vector at that α
(every α sees the same prompts and the same per-row seeds, so curves differ only by α). Scores:

* behaviour: **keyword hit rate** (share of rollouts containing any keyword, whole words,
  case-insensitive), **concept similarity** (MiniLM cosine between each rollout and a concept
  description), **target activation** (mean SAE activation of chosen features over generated
  positions, read on an unsteered re-run as in the effects measurement);
* coherence: **log-likelihood** of the rollout's tokens under the *unsteered* model (mean nats per
  token), and **ΔCE** of the steered model on neutral reference text;
* **coherence score** = exp(mean log-likelihood at α − at α = 0), capped at 1 (a per-token
  likelihood ratio: 1 means as fluent as unsteered text), and the product behaviour × coherence.

Each α is written to DuckDB as soon as it is done (one transaction), so a cancelled or crashed
sweep keeps what it computed, and reopening the same sweep reads instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringCoreError
from steering_core.measure.scores import (  # noqa: F401  (re-exported: the sweep's public names)
    AlphaPoint,
    add_product,
    coherence_score,
    finish,
    keyword_hits,
    mean_and_se,
)
from steering_core.model.sampling import row_seed
from steering_core.storage.crashpoints import crash_point
from steering_core.storage.library import LibraryTable

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel

#: Largest |α| accepted in a grid, in multiples of the residual norm at the layer.
MAX_ALPHA_NORMS = 20.0
MAX_SAMPLES = 64
MAX_GRID = 64
MAX_TOKENS = 256  # tokens per rollout


class SweepError(SteeringCoreError):
    """A sweep that cannot run as asked (the message says which setting to change)."""


def parse_grid(text: str) -> tuple[float, ...]:
    """An α grid as typed or linked ("0, 10, 20"; semicolons too) into numbers. One reading for the
    page's box and for links, so a grid that runs is a grid that links."""
    try:
        values = tuple(float(x) for x in str(text).replace(";", ",").split(",") if x.strip())
    except ValueError:
        values = ()
    if not values:
        raise SweepError("The manual grid must be numbers separated by commas, such as 0, 10, 20.")
    if bad := [v for v in values if not math.isfinite(v)]:
        raise SweepError(f"α values must be finite; the grid contains {bad[0]}.")
    if len(values) > MAX_GRID:
        raise SweepError(f"At most {MAX_GRID} α values per sweep; the grid has {len(values)}.")
    return values


@dataclass(frozen=True)
class SweepSpec:
    prompts: tuple[str, ...]
    alphas: tuple[float, ...]
    samples: int = 4
    new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 50
    seed: int = 0
    chat: bool = True
    keywords: tuple[str, ...] | None = None  # None: keyword score off
    concept: str | None = None  # None: similarity score off
    target_features: tuple[int, ...] = ()
    behaviour: str = "keywords"  # which behavioural score the product uses
    judge_criterion: str | None = None  # e.g. "The text contains discussion about a wedding"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def check_spec(spec: SweepSpec, residual_norm: float | None = None) -> SweepSpec:
    """Every way a sweep request can be unusable, as one sentence each."""
    prompts = tuple(p for p in spec.prompts if isinstance(p, str) and p.strip())
    if not prompts:
        raise SweepError("Give at least one prompt that is not empty.")
    alphas = []
    for a in spec.alphas:
        try:
            a = float(a)
        except (TypeError, ValueError):
            raise SweepError(f"α values must be numbers; {a!r} is not.") from None
        if not math.isfinite(a):
            raise SweepError(f"α values must be finite; the grid contains {a}.")
        if residual_norm and abs(a) > MAX_ALPHA_NORMS * residual_norm:
            raise SweepError(f"α = {a:g} is {abs(a) / residual_norm:.0f}× the residual norm at this layer; "
                             f"the limit is {MAX_ALPHA_NORMS:g}× ({MAX_ALPHA_NORMS * residual_norm:.0f}).")
        alphas.append(a)
    if not alphas:
        raise SweepError("The α grid is empty.")
    if len(alphas) > MAX_GRID:
        raise SweepError(f"At most {MAX_GRID} α values per sweep; the grid has {len(alphas)}.")
    if 0.0 not in alphas:
        alphas.append(0.0)  # the coherence score is relative to α = 0
    if not isinstance(spec.samples, int) or isinstance(spec.samples, bool) or not 1 <= spec.samples <= MAX_SAMPLES:
        raise SweepError(f"Samples per α must be a whole number from 1 to {MAX_SAMPLES}, got {spec.samples!r}.")
    if not isinstance(spec.new_tokens, int) or not 1 <= spec.new_tokens <= MAX_TOKENS:
        raise SweepError(f"Rollout length must be 1 to 256 tokens, got {spec.new_tokens!r}.")
    keywords = spec.keywords
    if keywords is not None:
        keywords = tuple(k.strip() for k in keywords if isinstance(k, str) and k.strip())
        if not keywords:
            raise SweepError("The keyword list is empty: give at least one keyword, or turn the keyword score off.")
    concept = spec.concept
    if concept is not None:
        if not isinstance(concept, str) or not concept.strip():
            raise SweepError("The concept description is empty (or only spaces): describe the concept in words, "
                             "or turn the similarity score off.")
        concept = concept.strip()
    criterion = spec.judge_criterion
    if criterion is not None:
        if not isinstance(criterion, str) or not criterion.strip():
            raise SweepError("The judge criterion is empty: say what the text should contain, or turn the judge off.")
        criterion = criterion.strip()
    behaviours = {"keywords": keywords is not None, "similarity": concept is not None,
                  "target": bool(spec.target_features), "judge": criterion is not None}
    if spec.behaviour not in behaviours:
        raise SweepError(f"Unknown behavioural score {spec.behaviour!r}; choose one of {', '.join(behaviours)}.")
    if not behaviours[spec.behaviour]:
        raise SweepError(f"The product uses the {spec.behaviour} score, which is not set up: "
                         "give keywords, a concept description or target features.")
    return SweepSpec(prompts, tuple(sorted(set(alphas))), spec.samples, spec.new_tokens, spec.temperature,
                     spec.top_k, spec.seed, spec.chat, keywords, concept, tuple(int(f) for f in spec.target_features),
                     spec.behaviour, criterion)


# -- measurement ---------------------------------------------------------------------------------------


def _operator(operator: str | None, reference) -> str:
    """The operator's name: the one given, else the one a reference point implies (ACE with one)."""
    from steering_core.model.operators import implied_operator

    return operator if operator is not None else implied_operator(reference)


#: Version of the per-rollout seed scheme; part of every sweep key, so points sampled under an older
#: scheme (v1: ``seed + 1000·i + j``, which made seeds 0 and 1 share most rollouts) are never served.
SEED_SCHEME = 3  # 3: counter-based Gumbel sampling (steering_core.model.sampling)


def sample_seed(seed: int, prompt: int, sample: int) -> int:
    """The generator seed of rollout ``sample`` of prompt ``prompt`` in a sweep with ``seed``: a hash of
    the three numbers (63 bits), so different sweep seeds share no rollout seeds (any integer seed,
    negative ones included)."""
    return row_seed(seed, prompt, sample)


def rollout_seeds(seed: int, n_prompts: int, samples: int) -> list[int]:
    """Seeds of every rollout of one α, prompt-major (the order of the generated rows)."""
    return [sample_seed(seed, i, j) for i in range(n_prompts) for j in range(samples)]


def rollout_prompts(model: SteerableModel, spec: SweepSpec) -> list[str]:
    """The text each rollout row continues, prompt-major (``samples`` rows per prompt, in the order of
    :func:`rollout_seeds`): the prompt in the chat template when ``spec.chat`` and the model has one.
    Every entry of a sweep or comparison is generated from, and scored against, these rows."""
    return [model.format_prompt(p, chat=spec.chat) if spec.chat and model.chat_template else p
            for p in spec.prompts for _ in range(spec.samples)]


def _rollouts(model: SteerableModel, vector, layer: int, alpha: float, spec: SweepSpec, reference=None,
              operator: str | None = None):
    from steering_core.model.generation import GenerationConfig, generate
    from steering_core.model.operators import operator_term
    from steering_core.model.steering import steering

    prompts = rollout_prompts(model, spec)
    seeds = rollout_seeds(spec.seed, len(spec.prompts), spec.samples)
    term = operator_term(model, _operator(operator, reference), layer, vector, alpha, reference=reference)
    cfg = GenerationConfig(max_new_tokens=spec.new_tokens, temperature=spec.temperature, top_k=spec.top_k,
                           stop_at_eos=False)
    res = generate(model, prompts, cfg, steering=steering(model, term), row_seeds=seeds)
    return prompts, res


def _unsteered_pass(model: SteerableModel, prompts, token_ids, sae: LoadedSAE | None = None,
                    features: Sequence[int] = ()):
    """Mean log-likelihood per generated token under the unsteered model, per row, and the mean
    activation of ``features`` over generated positions (NaN when there is no SAE)."""
    from steering_core.model.recording import recording

    ids, mask = model.tokenize(prompts)
    width = max(len(t) for t in token_ids)
    gen = torch.full((len(prompts), width), model.pad_token_id, dtype=ids.dtype)
    gmask = torch.zeros((len(prompts), width), dtype=mask.dtype)
    for i, t in enumerate(token_ids):
        gen[i, :len(t)] = torch.tensor(t, dtype=ids.dtype)
        gmask[i, :len(t)] = 1
    full = torch.cat([ids, gen.to(ids.device)], 1)
    fmask = torch.cat([mask, gmask.to(mask.device)], 1)
    layers = [sae.layer] if sae is not None and features else []
    with torch.no_grad(), recording(model, layers) as chunks:
        logits = model.backend.forward(full, fmask).float()
    p = ids.shape[1]
    lp = torch.log_softmax(logits[:, p - 1:-1], -1).gather(-1, gen.to(logits.device).unsqueeze(-1)).squeeze(-1)
    gm = gmask.to(lp.device).float()
    loglik = ((lp * gm).sum(1) / gm.sum(1).clamp(min=1)).cpu().numpy()
    act = np.full(len(prompts), np.nan)
    if layers:
        x = chunks[sae.layer][0][:, p:].float()
        f = sae.encode(x)[..., list(features)].float().mean(-1)  # [rows, gen]
        act = ((f * gm).sum(1) / gm.sum(1).clamp(min=1)).cpu().numpy()
    return loglik, act


def measure_alpha(model: SteerableModel, vector, layer: int, alpha: float, spec: SweepSpec,
                  sae: LoadedSAE | None = None, reference=None, ref_ids=None, judge=None,
                  operator: str | None = None) -> AlphaPoint:
    """All scores at one α (see the module docstring). ``operator`` names a registered steering
    operator (:mod:`steering_core.model.operators`); by default addition, or ACE when a reference
    point is given."""
    from steering_core.measure.alpha import delta_ce
    from steering_core.model.operators import get_operator

    prompts, res = _rollouts(model, vector, layer, alpha, spec, reference, operator)
    scores, notes = score_rollouts(model, prompts, res.texts, res.token_ids, spec, sae, judge)
    if ref_ids is not None and get_operator(_operator(operator, reference)).additive:  # ΔCE probes add α·v
        v = torch.as_tensor(vector, dtype=torch.float32)
        scores["dce"] = float(delta_ce(model, ref_ids, layer, v[None], torch.tensor([float(alpha)]))[0])
    return AlphaPoint(float(alpha), scores, list(res.texts), notes)


def score_rollouts(model: SteerableModel, prompts: Sequence[str], texts: Sequence[str], token_ids,
                   spec: SweepSpec, sae: LoadedSAE | None = None, judge=None) -> tuple[dict[str, float], list[str]]:
    """Every score of one set of rollouts (means and standard errors) and the judge's notes.

    ``prompts`` are the rows the rollouts are *scored* against (:func:`rollout_prompts`), whatever
    they were generated from: a steered rollout and a prompted one (the prompting baseline,
    :mod:`steering_core.measure.prompting`) are read by the same unsteered model in the same
    context, so their scores differ only by the text."""
    loglik, act = _unsteered_pass(model, prompts, token_ids, sae, spec.target_features)
    scores: dict[str, float] = {}

    def put(name: str, values) -> None:
        m, se = mean_and_se(values)
        scores[name], scores[name + "_se"] = m, se

    put("loglik", loglik)
    if spec.keywords is not None:
        put("keywords", keyword_hits(texts, spec.keywords))
    if spec.concept is not None:
        from steering_core.model.embeddings import embed_texts

        emb = embed_texts(list(texts) + [spec.concept])
        put("similarity", emb[:-1] @ emb[-1])
    if spec.target_features and sae is not None:
        put("target", act)
    notes = []
    if judge is not None and spec.judge_criterion:
        from steering_core.measure.judge import JudgeError, judge_rollouts

        try:
            beh, coh = judge_rollouts(judge, spec.judge_criterion, prompts, texts)
            put("judge", beh)
            put("judge_coherence", coh)
        except JudgeError as exc:
            notes.append(str(exc))
    return scores, notes


# -- cache -----------------------------------------------------------------------------------------------


#: Scores derived from the others when a sweep finishes (never cached: the α = 0 point they depend on may change).
DERIVED = ("coherence", "coherence_se", "product", "product_se")


class SweepCache(LibraryTable):
    """Sweep points in DuckDB, one row per (sweep key, α), each written in its own statement."""

    SCHEMA = ("""CREATE TABLE IF NOT EXISTS sweep_points (
        key TEXT, alpha DOUBLE, scores TEXT, samples TEXT,
        created TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (key, alpha))""",)

    def get(self, key: str) -> dict[float, AlphaPoint]:
        with self._lock:
            rows = self.con.execute("SELECT alpha, scores, samples FROM sweep_points WHERE key = ?", [key]).fetchall()
        return {float(a): AlphaPoint(float(a), json.loads(s), json.loads(t)) for a, s, t in rows}

    def put(self, key: str, p: AlphaPoint) -> None:
        raw = {k: v for k, v in p.scores.items() if k not in DERIVED}
        with self._lock:
            self.con.execute("INSERT OR REPLACE INTO sweep_points (key, alpha, scores, samples) VALUES (?, ?, ?, ?)",
                             [key, p.alpha, json.dumps(raw), json.dumps(p.samples)])


def sweep_key(model_name: str, vector, layer: int, spec: SweepSpec, reference=None,
              operator: str | None = None) -> str:
    h = hashlib.sha256()
    h.update(f"seeds=v{SEED_SCHEME};".encode())  # a new seed scheme never reuses old points
    if operator is not None and operator != _operator(None, reference):  # the implied one keeps old keys
        h.update(f"operator={operator};".encode())
    h.update(model_name.encode())
    h.update(torch.as_tensor(vector, dtype=torch.float32).contiguous().numpy().tobytes())
    if reference is not None:
        h.update(torch.as_tensor(reference, dtype=torch.float32).contiguous().numpy().tobytes())
    base = json.loads(spec.to_json())
    base.pop("alphas")  # points are cached per α: growing the grid reuses what exists
    h.update(json.dumps([int(layer), base], sort_keys=True).encode())
    return h.hexdigest()[:40]


def check_targets(spec: SweepSpec, sae: LoadedSAE | None) -> None:
    """Target features need an SAE that has them; checked before any generation, so a bad id
    never costs a sweep."""
    if spec.target_features and sae is None:
        raise SweepError("Target-feature scores need an SAE at some layer; load one or drop the target features.")
    for f in spec.target_features:
        try:
            sae.check_feature(f)
        except SteeringCoreError as exc:
            raise SweepError(f"Target feature: {exc}") from None


def run_sweep(model: SteerableModel, vector, layer: int, spec: SweepSpec, sae: LoadedSAE | None = None, reference=None,
              cache: SweepCache | None = None, with_dce: bool = True, judge=None,
              on_point: Callable[[int, int, AlphaPoint], None] | None = None,
              should_stop: Callable[[], bool] | None = None, operator: str | None = None) -> list[AlphaPoint]:
    """Scores at every α of the grid (α = 0 always included), cached α by α.

    ``should_stop`` is polled between α values: a stopped sweep returns (and has stored) the
    points done so far. ``judge`` (a :class:`~steering_core.measure.judge.JudgeConfig`) adds the judge's
    scores when ``spec.judge_criterion`` is set; if it fails, the point keeps every other score
    and says why in ``notes``. ``operator`` names the steering operator (a saved vector's
    ``operator``); without one, addition, or ACE when ``reference`` is given.
    """
    from steering_core.measure.alpha import reference_ids
    from steering_core.model.operators import get_operator

    get_operator(_operator(operator, reference))  # an unknown operator fails before any generation

    spec = check_spec(spec, model.residual_norms()[layer])
    check_targets(spec, sae)
    key = sweep_key(model.name, vector, layer, spec, reference, operator)
    have = cache.get(key) if cache is not None else {}
    ref_ids = reference_ids(model) if with_dce else None
    points = []
    for i, a in enumerate(spec.alphas):
        if a in have:
            p = have[a]
        else:
            if should_stop is not None and should_stop():
                break
            p = measure_alpha(model, vector, layer, a, spec, sae, reference, ref_ids, judge, operator)
            if cache is not None and not p.notes:  # a point missing its judge scores is redone next time
                cache.put(key, p)
                crash_point("sweep:point_written")
        points.append(p)
        if on_point is not None:
            on_point(i + 1, len(spec.alphas), p)
    return finish(points, spec.behaviour)
