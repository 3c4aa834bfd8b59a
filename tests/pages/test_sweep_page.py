"""Sweep seeds that do not overlap between sweep seeds (bug 5), and a Sweep page whose bad sidebar
input is reported in the sidebar without blanking the other tabs or leaving a stale result (bug 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steering_core.measure.sweep import SweepSpec, rollout_seeds, run_sweep, sample_seed, sweep_key

ROOT = Path(__file__).resolve().parents[2]


# -- bug 5: seeds -----------------------------------------------------------------------------------


def test_sweep_seeds_do_not_overlap_between_seeds():
    # a realistic grid: 10 prompts × 64 samples (the page's maximum), seeds 0..9
    per_seed = {s: rollout_seeds(s, 10, 64) for s in range(10)}
    for s, seeds in per_seed.items():
        assert len(set(seeds)) == len(seeds)
        for t in range(s + 1, 10):
            assert not set(seeds) & set(per_seed[t]), (s, t)
    # deterministic, any integer seed, and within torch.manual_seed's range
    assert sample_seed(-3, 1, 2) == sample_seed(-3, 1, 2)
    assert all(0 <= x < 2 ** 63 for x in rollout_seeds(-1, 3, 4))


def test_sweep_key_carries_the_seed_scheme(tiny_hf):
    import torch

    import steering_core.measure.sweep as sw

    spec = SweepSpec(prompts=("hi",), alphas=(0.0,), keywords=("a",))
    v = torch.ones(tiny_hf.d_model)
    key = sweep_key("m", v, 0, spec)
    old, sw.SEED_SCHEME = sw.SEED_SCHEME, sw.SEED_SCHEME - 1
    try:
        assert sweep_key("m", v, 0, spec) != key  # points from an older scheme are never served
    finally:
        sw.SEED_SCHEME = old


def test_two_sweeps_with_seeds_0_and_1_share_no_samples(tiny_hf):
    import torch

    v = torch.nn.functional.normalize(torch.ones(tiny_hf.d_model), dim=0)
    texts = []
    for seed in (0, 1):
        spec = SweepSpec(prompts=("I think", "Tell me", "Once upon"), alphas=(0.0,), samples=4, new_tokens=8,
                         seed=seed, keywords=("the",))
        (p,) = run_sweep(tiny_hf, v, 0, spec, with_dce=False)
        texts.append(p.samples)
    # the old scheme (seed + 1000·i + j) shared 3 of 4 rollouts per prompt: 9 of 12 here
    shared = sum(a == b for a in texts[0] for b in texts[1])
    assert shared <= 1, shared


# -- bug 6: the Sweep page with a bad feature id ------------------------------------------------------


@pytest.fixture()
def page(sweep_page_app):
    return sweep_page_app


def test_bad_feature_id_is_reported_in_the_sidebar_and_the_page_keeps_working(page, manual_sweep):
    at = page
    at.radio(key="sw_source").set_value("SAE feature (decoder row)")
    at.text_input(key="sw_feature").set_value("1")
    at = at.run()
    at = manual_sweep(at, "0, 2", samples=1, tokens=4)  # a sweep for feature 1
    assert not at.exception, at.exception
    assert at.session_state["sw_result"]["label"] == "feature 1"
    assert len(at.dataframe) >= 1

    at.text_input(key="sw_feature").set_value(" abc ")
    at = at.run()
    assert not at.exception, at.exception
    # the error is in the sidebar, next to the input, and echoes the stripped input
    side = [e.value for e in at.sidebar.error]
    assert side and "'abc'" in side[0] and "' abc '" not in side[0], side
    # the main area still draws: every tab's widgets, Compare methods usable
    for key in ("sw_prompts", "nt_prompt", "cmp_features"):
        assert at.text_input(key=key) if key != "sw_prompts" else at.text_area(key=key)
    assert at.button(key="sw_go").disabled and at.button(key="nt_go").disabled
    assert not at.button(key="cmp_go").disabled
    # the result for feature 1 is no longer shown under the invalid input
    assert not at.dataframe
    assert not at.get("plotly_chart")

    at.text_input(key="cmp_features").set_value("2")
    at = at.button(key="cmp_go").click().run()
    assert not at.exception, at.exception
    rows, _ = at.session_state["cmp_result"]
    assert len(rows) == 1

    # a valid, different feature: the old result is shown, marked as being for feature 1
    at.text_input(key="sw_feature").set_value("3")
    at = at.run()
    assert not at.exception, at.exception
    assert any("for feature 1, not feature 3" in w.value for w in at.warning)


def test_one_rollout_per_alpha_shows_unknown_standard_errors_not_zero(page, manual_sweep):
    """One prompt × one sample per α: the table's ± read — and the page says why; before, they
    read 0.000, an exact measurement nobody made."""
    at = page
    at.text_area(key="sw_prompts").set_value("I think")
    at = manual_sweep(at.run(), "0, 2", samples=1, tokens=4)
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert (table["± keywords"] == "—").all() and (table["± loglik"] == "—").all()  # not a grey "None"
    assert (table.loc[table["alpha"] == 2.0, "± product"] == "—").all()
    assert any("A ± of — is unknown" in c.value for c in at.caption)
    assert any("(no standard error) at α" in c.value for c in at.caption)


def test_a_sweep_whose_peak_is_faint_says_there_is_no_useful_alpha(page):
    """A peak behaviour × coherence of 0.03 is shown with a warning, not as a recommendation."""
    from steering_core.measure.sweep import AlphaPoint

    at = page
    points = [AlphaPoint(a, {"keywords": k, "coherence": c, "product": k * c, "loglik": -2.0})
              for a, k, c in ((0.0, 0.0, 1.0), (10.0, 0.05, 0.6), (20.0, 0.1, 0.2))]
    at.session_state["sw_result"] = {"points": points, "auto": None, "label": "feature 0", "behaviour": "keywords"}
    at.run()
    assert not at.exception, at.exception
    assert any("peak keywords × coherence = 0.03 (no standard error) at α = 10.0" in c.value for c in at.caption)
    assert any(w.value.startswith("No useful α: the best keywords × coherence is 0.03") for w in at.warning)


# -- a dataset's target features as the sweep's behaviour (issue 19) ----------------------------------------


def test_a_datasets_target_features_fill_the_target_feature_score(page, manual_sweep):
    from steering_core import load_model
    from steering_core.datasets import load_example
    from steering_core.measure.prompt_pairs import FeatureSelection, find_target_features
    from steering_core.model.saes import load_sae

    at = page
    at.selectbox(key="sw_tf_dataset").set_value("example: wedding_vs_neutral")
    at.number_input(key="sw_tf_share").set_value(0.5)
    at.number_input(key="sw_tf_neg").set_value(1.0)
    at = at.button(key="sw_tf_go").click().run()
    assert not at.exception, at.exception
    model = load_model("tiny")
    want = find_target_features(model, load_sae("tiny", model), load_example("wedding_vs_neutral"),
                                FeatureSelection(share=0.5, max_negative_share=1.0))
    assert want.target, "the tiny SAE has features on half the positives"
    assert at.text_input(key="sw_tf").value == ", ".join(str(f) for f in want.target)
    assert at.checkbox(key="sw_use_tf").value
    assert any(c.value.startswith("example: wedding_vs_neutral: #") for c in at.caption)
    # they are the sweep's behaviour score
    at.radio(key="sw_behaviour").set_value("target")
    at = manual_sweep(at.run(), "0, 2", samples=1, tokens=4)
    assert not at.exception, at.exception
    res = at.session_state["sw_result"]
    assert res["behaviour"] == "target" and all("target" in p.scores for p in res["points"])
    # a threshold no feature meets gets a sentence, and the field keeps its features
    at.number_input(key="sw_tf_share").set_value(1.0)
    at.number_input(key="sw_tf_neg").set_value(0.0)
    at = at.button(key="sw_tf_go").click().run()
    assert not at.exception, at.exception
    assert any("no target features" in e.value for e in at.error)
    assert at.text_input(key="sw_tf").value == ", ".join(str(f) for f in want.target)


# -- a result made with other settings says so (user-style audit) -------------------------------------------


def test_a_sweep_result_made_with_other_settings_is_marked_and_shows_its_standard_errors(page, manual_sweep):
    at = page
    at.radio(key="sw_source").set_value("SAE feature (decoder row)")
    at.text_input(key="sw_feature").set_value("1")
    at = manual_sweep(at.run(), "0, 2", samples=2, tokens=4)
    assert not at.exception, at.exception
    assert not [w.value for w in at.warning if "other settings" in w.value]
    # every score in the table sits next to its standard error
    table = at.dataframe[0].value
    for name in ("keywords", "coherence", "product"):
        assert f"± {name}" in table.columns and list(table.columns).index(f"± {name}") == \
            list(table.columns).index(name) + 1
    made = at.session_state["sw_result"]["points"]
    at.text_input(key="sw_keywords").set_value("cake").run()
    at.text_input(key="sw_grid").set_value("0, 1, 2").run()
    note = next(w.value for w in at.warning if "other settings" in w.value)
    assert "(α grid, keywords changed since)" in note and "run the sweep again" in note, note
    assert at.session_state["sw_result"]["points"] == made  # nothing was recomputed behind the user's back
    at.text_input(key="sw_keywords").set_value("the, a").run()
    at.text_input(key="sw_grid").set_value("0, 2").run()
    assert not [w.value for w in at.warning if "other settings" in w.value]


def test_a_keyword_rate_every_rollout_missed_gets_its_wilson_bound_on_the_page(page):
    from steering_core.measure.sweep import AlphaPoint

    at = page
    points = [AlphaPoint(a, {"keywords": 0.0, "keywords_se": 0.0, "coherence": c, "product": 0.0, "product_se": 0.0,
                             "loglik": -2.0, "loglik_se": 0.1}, ["text"] * 6)
              for a, c in ((0.0, 1.0), (10.0, 0.6))]
    at.session_state["sw_result"] = {"points": points, "auto": None, "label": "feature 0", "behaviour": "keywords"}
    at.run()
    assert not at.exception, at.exception
    assert any("with 6 rollouts, a rate of 0 is still consistent with up to 0.39" in c.value for c in at.caption)
