"""The prompting baseline: the same task done by asking instead of steering.

AxBench's lesson ([Wu 2025], via [Steering notes]; docs/design.md §Offline evaluation) is that a
written instruction ("Always mention weddings.") beats most steering vectors, so a comparison
that leaves it out flatters steering. A :class:`PromptEntry` is such an instruction, put in the
system prompt or in front of each user prompt, with no vector at all.

To be a fair reference the entry must differ from a steered sweep point *only* in how its text was
produced:

* the same rows: the task's prompts × samples, each with the seed the steered rollouts use
  (:func:`~steering_core.measure.sweep.rollout_seeds`, a hash per (seed, prompt, sample), so no two
  rollouts share a seed);
* the same scorers, called through the same function
  (:func:`~steering_core.measure.sweep.score_rollouts`): keywords, concept similarity, target
  activation, the judge, and log-likelihood under the unsteered model **in the plain prompt's
  context, without the instruction**, exactly as steered rollouts are read. The instruction is
  part of the intervention, not of the text being judged; reading the rollouts with it would
  excuse on-topic text that steering is charged for;
* the same coherence score and product (:func:`~steering_core.measure.sweep.add_product`),
  relative to the unsteered rollouts.

So an empty instruction *is* the unsteered model: its point equals a sweep's α = 0 point bit for
bit (``tests/measure/test_prompting.py``). A prompting entry has no α; its single point is stored at
α = 0 (nothing is added to the residual stream) and drawn as a horizontal line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steering_core.measure.scores import AlphaPoint, add_product
from steering_core.measure.sweep import (
    SEED_SCHEME,
    SweepCache,
    SweepError,
    SweepSpec,
    check_spec,
    check_targets,
    rollout_prompts,
    rollout_seeds,
    score_rollouts,
)

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel

#: Where an instruction goes: the chat template's system message, or in front of the user prompt.
PLACEMENTS = ("system", "prefix")
#: Between an instruction placed in front of a prompt and the prompt itself.
PREFIX_SEPARATOR = "\n\n"
#: Longest instruction accepted (a system prompt of a few paragraphs).
MAX_INSTRUCTION_CHARS = 4000


@dataclass(frozen=True)
class PromptEntry:
    """A prompting baseline: ``instruction`` (empty: the unsteered model) placed as ``placement``."""

    name: str
    instruction: str
    placement: str = "system"  # one of PLACEMENTS

    @property
    def is_empty(self) -> bool:
        return not self.instruction.strip()


@dataclass
class PromptResult:
    """A scored prompting entry: ``point`` (coherence and product relative to ``baseline``) and the
    unsteered point it is measured against."""

    entry: PromptEntry
    point: AlphaPoint
    baseline: AlphaPoint


def check_entry(model: SteerableModel, entry: PromptEntry, spec: SweepSpec) -> PromptEntry:
    """The entry as used, or a :class:`SweepError` saying what to change."""
    if not isinstance(entry, PromptEntry):
        raise SweepError(f"A prompting entry must be a PromptEntry, not {type(entry).__name__}.")
    if not isinstance(entry.name, str) or not entry.name.strip():
        raise SweepError("Give the prompting entry a name.")
    if not isinstance(entry.instruction, str):
        raise SweepError(f"The instruction must be text, not {type(entry.instruction).__name__}.")
    if len(entry.instruction) > MAX_INSTRUCTION_CHARS:
        raise SweepError(f"The instruction is {len(entry.instruction):,} characters long; the limit is "
                         f"{MAX_INSTRUCTION_CHARS:,}.")
    if entry.placement not in PLACEMENTS:
        raise SweepError(f"Unknown placement {entry.placement!r}; choose one of {', '.join(PLACEMENTS)}.")
    if entry.placement == "system" and not entry.is_empty and not (spec.chat and model.chat_template):
        raise SweepError("A system prompt needs a chat template and chat prompts; this task uses raw text, so "
                         "place the instruction as a prefix instead.")
    return dataclasses.replace(entry, name=entry.name.strip(), instruction=entry.instruction.strip())


def instructed_prompts(model: SteerableModel, entry: PromptEntry, spec: SweepSpec) -> list[str]:
    """The text each rollout row is generated from: the task's rows (:func:`rollout_prompts`) with the
    instruction in them. With an empty instruction these are the task's rows themselves."""
    if entry.is_empty:
        return rollout_prompts(model, spec)
    chat = spec.chat and model.chat_template
    rows = []
    for p in spec.prompts:
        if entry.placement == "system":
            text = model.format_prompt(p, chat=True, system=entry.instruction)
        else:
            text = entry.instruction + PREFIX_SEPARATOR + p
            text = model.format_prompt(text, chat=True) if chat else text
        rows.extend([text] * spec.samples)
    return rows


def prompt_key(model_name: str, entry: PromptEntry, spec: SweepSpec) -> str:
    """Cache key of a prompting point: model, instruction, placement and every task setting but the
    α grid. Distinct from every vector sweep's key (those hash a vector)."""
    base = json.loads(spec.to_json())
    base.pop("alphas")
    placement = entry.placement if not entry.is_empty else ""  # every empty entry is the same baseline
    payload = json.dumps(["prompting", f"seeds=v{SEED_SCHEME}", model_name, entry.instruction, placement, base],
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]


def measure_prompt(model: SteerableModel, entry: PromptEntry, spec: SweepSpec, sae: LoadedSAE | None = None,
                   judge=None) -> AlphaPoint:
    """The raw scores of one prompting entry (no coherence or product yet; see :func:`prompt_baseline`).
    ``spec`` must already be checked (:func:`~steering_core.measure.sweep.check_spec`)."""
    from steering_core.model.generation import GenerationConfig, generate

    seeds = rollout_seeds(spec.seed, len(spec.prompts), spec.samples)
    cfg = GenerationConfig(max_new_tokens=spec.new_tokens, temperature=spec.temperature, top_k=spec.top_k,
                           stop_at_eos=False)
    res = generate(model, instructed_prompts(model, entry, spec), cfg, row_seeds=seeds)
    scores, notes = score_rollouts(model, rollout_prompts(model, spec), res.texts, res.token_ids, spec, sae, judge)
    return AlphaPoint(0.0, scores, list(res.texts), notes)


def _cached_point(model: SteerableModel, entry: PromptEntry, spec: SweepSpec, sae, judge,
                  cache: SweepCache | None) -> AlphaPoint:
    key = prompt_key(model.name, entry, spec)
    have = cache.get(key) if cache is not None else {}
    if 0.0 in have:
        return have[0.0]
    p = measure_prompt(model, entry, spec, sae, judge)
    if cache is not None and not p.notes:  # a point missing its judge scores is redone next time
        cache.put(key, p)
    return p


def prompt_baseline(model: SteerableModel, entry: PromptEntry, spec: SweepSpec, sae: LoadedSAE | None = None,
                    cache: SweepCache | None = None, judge=None,
                    baseline: AlphaPoint | None = None) -> PromptResult:
    """Score a prompting entry on a sweep's task, ready to draw beside the sweep's curves.

    ``baseline`` is the unsteered point to measure coherence against: a sweep's α = 0 point of an
    additive vector (bit-for-bit the unsteered rollouts) saves generating them again; without it
    the unsteered rollouts are measured here (and cached, like every point, when ``cache`` is given).
    """
    spec = check_spec(dataclasses.replace(spec, alphas=(0.0,)))
    check_targets(spec, sae)
    entry = check_entry(model, entry, spec)
    own = baseline is None
    if own:
        baseline = _cached_point(model, PromptEntry("unsteered", ""), spec, sae, judge, cache)
        add_product(baseline, spec.behaviour, baseline.get("loglik"), 0.0)
    if own and entry.is_empty:  # the same rollouts: not generated twice
        point = AlphaPoint(baseline.alpha, dict(baseline.scores), list(baseline.samples), list(baseline.notes))
    else:
        point = _cached_point(model, entry, spec, sae, judge, cache)
    add_product(point, spec.behaviour, baseline.get("loglik"), baseline.get("loglik_se"))
    return PromptResult(entry, point, baseline)
