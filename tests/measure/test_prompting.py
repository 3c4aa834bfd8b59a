"""The prompting baseline on a tiny model: an empty instruction is the unsteered row bit for bit,
an instruction is generated on the sweep's own rows and seeds and scored in the plain context."""

from __future__ import annotations

import math

import pytest

from steering_core import random_unit_vector
from steering_core.measure import prompting
from steering_core.measure.prompting import (
    PREFIX_SEPARATOR,
    PromptEntry,
    check_entry,
    instructed_prompts,
    prompt_baseline,
)
from steering_core.measure.sweep import (
    SweepCache,
    SweepError,
    SweepSpec,
    coherence_score,
    rollout_prompts,
    rollout_seeds,
    run_sweep,
)
from steering_core.model.saes import tiny_sae


def _spec(**kw):
    base = dict(prompts=("hello", "the weather"), alphas=(3.0,), samples=2, new_tokens=6, chat=True,
                keywords=("the", "a"))
    base.update(kw)
    return SweepSpec(**base)


@pytest.mark.parametrize("chat", [True, False])
def test_an_empty_prompt_equals_the_unsteered_row_bit_for_bit(tiny_hf, chat, one_thread):
    sae = tiny_sae(tiny_hf, layer=1, d_sae=32)
    spec = _spec(chat=chat, target_features=(0, 3))
    pts = run_sweep(tiny_hf, random_unit_vector(tiny_hf.d_model, 1), 1, spec, sae=sae, with_dce=False)
    zero = next(p for p in pts if p.alpha == 0.0)
    for entry in (PromptEntry("none", ""), PromptEntry("blank", "  \n", "prefix")):
        got = prompt_baseline(tiny_hf, entry, spec, sae=sae)
        assert got.point == zero  # α, every score (means, SEs, coherence 1, product) and every sample
        assert got.point.scores == zero.scores and got.point.samples == zero.samples
        assert got.baseline.scores == zero.scores
    # and measured against a given baseline instead of its own (generated, not copied), the same again
    given = prompt_baseline(tiny_hf, PromptEntry("none", ""), spec, sae=sae, baseline=zero)
    assert given.point == zero


def test_an_instruction_runs_on_the_sweep_rows_and_seeds_and_is_read_without_itself(tiny_hf, monkeypatch, one_thread):
    import steering_core.model.generation as gen

    spec = _spec()
    calls, scored = [], []
    real_generate, real_score = gen.generate, prompting.score_rollouts

    def spy_generate(model, prompts, *a, **k):
        calls.append((list(prompts), list(k["row_seeds"]), k.get("steering")))
        return real_generate(model, prompts, *a, **k)

    def spy_score(model, prompts, *a, **k):
        scored.append(list(prompts))
        return real_score(model, prompts, *a, **k)

    monkeypatch.setattr(gen, "generate", spy_generate)
    monkeypatch.setattr(prompting, "score_rollouts", spy_score)
    res = prompt_baseline(tiny_hf, PromptEntry("weddings", "Always mention weddings."), spec)
    (base_rows, base_seeds, _), (rows, seeds, steering) = calls  # the unsteered rows, then the instructed ones
    assert seeds == base_seeds == rollout_seeds(spec.seed, 2, 2) and len(set(seeds)) == 4  # no shared seed
    assert steering is None and base_rows == rollout_prompts(tiny_hf, spec)
    assert rows == [tiny_hf.format_prompt(p, system="Always mention weddings.") for p in spec.prompts for _ in "ab"]
    assert scored == [base_rows, base_rows]  # both read in the plain context
    p, b = res.point, res.baseline
    assert p.alpha == 0.0 and p.samples != b.samples
    assert p.get("coherence") == coherence_score(p.get("loglik"), b.get("loglik"))
    assert p.get("product") == p.get("keywords") * p.get("coherence")
    assert b.get("coherence") == 1.0


def test_placements(tiny_hf):
    raw = _spec(chat=False)
    assert instructed_prompts(tiny_hf, PromptEntry("p", "Talk about cake.", "prefix"), raw) == [
        "Talk about cake." + PREFIX_SEPARATOR + p for p in raw.prompts for _ in "ab"]
    chat = _spec()
    assert instructed_prompts(tiny_hf, PromptEntry("p", "Talk about cake.", "prefix"), chat)[0] == \
        tiny_hf.format_prompt("Talk about cake." + PREFIX_SEPARATOR + "hello")
    with pytest.raises(SweepError, match="prefix instead"):
        check_entry(tiny_hf, PromptEntry("s", "Talk about cake.", "system"), raw)
    assert check_entry(tiny_hf, PromptEntry(" s ", "", "system"), raw).name == "s"  # empty: nothing to place


@pytest.mark.parametrize("entry, message", [
    (PromptEntry("x", "hi", "suffix"), "placement"),
    (PromptEntry("  ", "hi"), "name"),
    (PromptEntry("x", "a" * 5000), "limit"),
    (PromptEntry("x", 3), "text"),
])
def test_bad_entries_get_a_sentence(tiny_hf, entry, message):
    with pytest.raises(SweepError, match=message):
        check_entry(tiny_hf, entry, _spec())


def test_prompt_points_are_cached(tiny_hf, tmp_path, monkeypatch, one_thread):
    cache = SweepCache(tmp_path / "lib.duckdb")
    calls = []
    real = prompting.measure_prompt

    def counted(model, entry, *a, **k):
        calls.append(entry.instruction)
        return real(model, entry, *a, **k)

    monkeypatch.setattr(prompting, "measure_prompt", counted)
    entry = PromptEntry("w", "Always mention weddings.")
    first = prompt_baseline(tiny_hf, entry, _spec(), cache=cache)
    again = prompt_baseline(tiny_hf, entry, _spec(alphas=(7.0,)), cache=cache)  # the α grid is not part of it
    assert calls == ["", "Always mention weddings."]
    assert again.point.samples == first.point.samples and again.point.scores == first.point.scores
    other = prompt_baseline(tiny_hf, PromptEntry("w", "Always mention weddings.", "prefix"), _spec(), cache=cache)
    assert calls[-1] == "Always mention weddings." and len(calls) == 3 and not math.isnan(other.point.get("product"))
    cache.close()
