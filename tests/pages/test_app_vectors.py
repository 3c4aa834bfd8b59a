"""The Datasets and Vectors pages (AppTest) on the tiny model and the tiny pack: load, generate and
save datasets; fit, list, combine, inspect and sweep vectors; clear messages for bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture(autouse=True)
def _tiny_app(monkeypatch):
    """Pages in these tests run on the tiny model (set per test, so nothing leaks into others)."""
    monkeypatch.setenv("STEERING_MODEL", "tiny")


ROOT = Path(__file__).resolve().parents[2]


def _page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / name), default_timeout=180).run()


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    parts += [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def _button(at: AppTest, key: str) -> AppTest:
    return at.button(key=key).click().run()


# -- datasets -----------------------------------------------------------------------------------------


def test_load_an_example_and_save_it_to_the_library(app_env):
    from steering_core.datasets import DatasetStore

    at = _page("dataset_editor.py")
    at.selectbox(key="ds_open").set_value("example: london_vs_paris")
    at = _button(at, "ds_load")
    assert not at.exception, at.exception
    assert "44 pairs · 35 train · 9 heldout" in _text(at)
    at.text_input(key="ds_name").set_value("london test")
    at = _button(at, "ds_save")
    assert "Saved london test (44 pairs)" in _text(at)
    at.selectbox(key="ds_open").set_value("saved: london test")  # now offered
    store = DatasetStore(app_env / "library-copy.duckdb")  # a different file: nothing leaks into it
    assert store.names() == []
    store.close()


def _typed(at: AppTest, *pairs: tuple[str, str]) -> AppTest:
    """Type pairs into the empty table's new rows, as the data editor reports them."""
    at.session_state[f"ds_editor_{at.session_state['ds_version']}"] = {"edited_rows": {}, "deleted_rows": [],
                             "added_rows": [{"positive": p, "negative": n, "split": "train"} for p, n in pairs]}
    return at.run()


def test_generating_or_exporting_keeps_the_pairs_typed_into_the_table(app_env):
    """Audit: pairs typed by hand were silently dropped by "Append to table" and "Append story
    pairs" (and left out of the export), which read the table as last loaded, not as shown."""
    typed = [("I loved the film.", "I hated the film."), ("The soup was great.", "The soup was awful.")]
    at = _typed(_page("dataset_editor.py"), *typed)
    assert "2 pairs · 2 train · 0 heldout" in _text(at)
    at = _button(at, "gen_tpl_Append to table")  # the default templates: 3 pairs
    assert not at.exception, at.exception
    assert "3 pairs generated" in _text(at) and "5 pairs · 5 train · 0 heldout" in _text(at)
    at = _button(at, "gen_story")
    assert "6 pairs · 6 train · 0 heldout" in _text(at)


def test_a_half_typed_row_stops_append_with_a_sentence_and_keeps_the_table(app_env):
    at = _typed(_page("dataset_editor.py"), ("I loved the film.", "I hated the film."), ("Only one side.", ""))
    assert "1 pair · 1 train · 0 heldout · row 2 misses a side (Save refuses it)" in _text(at)  # audit: it said 2
    at = _button(at, "gen_tpl_Append to table")
    assert not at.exception, at.exception
    assert at.error and "row 2" in at.error[0].value
    assert "row 2 misses a side" in _text(at) and "pairs generated" not in _text(at)


def test_a_save_says_saved_and_its_warnings_once_after_its_rerun(app_env):
    at = _typed(_page("dataset_editor.py"), ("I loved the film.", "I hated the film."))
    at.text_input(key="ds_name").set_value("one pair")
    at = _button(at, "ds_save")
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Saved one pair (1 pair)."]  # "1 pairs" before
    assert [w.value for w in at.warning if w.value.startswith("Only one pair")], _text(at)
    at = at.run()  # shown once: the next run is quiet
    assert not at.success and not any(w.value.startswith("Only one pair") for w in at.warning)


def test_a_name_saved_with_spaces_around_it_can_be_deleted(app_env):
    at = _page("dataset_editor.py")
    at.selectbox(key="ds_open").set_value("example: formal_vs_casual")
    at = _button(at, "ds_load")
    at.text_input(key="ds_name").set_value("  sentiment test  ")
    at = _button(at, "ds_save")
    assert "Saved sentiment test" in _text(at)
    at.text_input(key="ds_name").set_value("  sentiment test  ")
    at = at.run()
    assert at.button(key="ds_delete").label == "Delete saved dataset sentiment test"
    at = _button(at, "ds_delete")
    assert "Deleted sentiment test." in _text(at)
    assert "saved: sentiment test" not in at.selectbox(key="ds_open").options


def test_bad_dataset_name_is_refused_and_nothing_is_saved(app_env):
    at = _page("dataset_editor.py")
    at.selectbox(key="ds_open").set_value("example: formal_vs_casual")
    at = _button(at, "ds_load")
    at.text_input(key="ds_name").set_value("../escape")
    at = _button(at, "ds_save")
    assert at.error, "a path-like name must be refused"
    assert "separator" in at.error[0].value.lower() or "path" in at.error[0].value.lower()
    assert not any("saved:" in o for o in at.selectbox(key="ds_open").options)
    assert not (app_env.parent / "escape").exists()


def test_template_generator_fills_the_table(app_env):
    at = _page("dataset_editor.py")
    at.text_area(key="gen_templates").set_value("<context> was sure they would <target>.\nIn the end <context> <target>.")
    at.text_area(key="gen_contexts").set_value("Ann\nBob\nthe team")
    at.text_area(key="gen_pos").set_value("win\nsmile")
    at.text_area(key="gen_neg").set_value("lose\nfrown")
    at = _button(at, "gen_tpl_Replace table")
    assert not at.exception, at.exception
    assert "12 pairs generated" in _text(at)
    assert "12 pairs · 12 train · 0 heldout" in _text(at)
    # unequal target lists: a message, the table is unchanged
    at.text_area(key="gen_neg").set_value("lose")
    at = _button(at, "gen_tpl_Replace table")
    assert at.error and "12 pairs · 12 train" in _text(at)


# -- vectors ------------------------------------------------------------------------------------------


def _fit(at: AppTest, method: str, name: str, layer: int = 1, weights: str | None = None) -> AppTest:
    at.selectbox(key="fit_dataset").set_value("example: wedding_vs_neutral")
    at.number_input(key="fit_layer").set_value(layer)
    at.selectbox(key="fit_method").set_value(method)
    at = at.run()
    if weights is not None:
        at.text_input(key="fit_weights").set_value(weights)
    at.text_input(key="fit_name").set_value(name)
    return _button(at, "fit_go")


def test_fit_save_and_list_vectors_with_several_methods(app_env):
    from steering_core.vectors.store import VectorStore

    at = _page("vectors.py")
    for method, name in (("caa", "w-caa"), ("ace", "w-ace"), ("probe", "w-probe"), ("feature_delta", "w-fd"),
                         ("saets", "w-saets")):
        at = _fit(at, method, name)
        assert not at.exception, at.exception
        assert f"Saved **{name}**" in _text(at), (method, _text(at)[-500:])
    store = VectorStore(app_env)
    assert set(store.names()) == {"w-caa", "w-ace", "w-probe", "w-fd", "w-saets"}
    assert store.load("w-ace").operator == "ace" and store.load("w-caa").dataset == "wedding_vs_neutral"
    store.close()


def test_the_fit_tab_shows_only_the_feature_boxes_the_method_reads(app_env):
    at = _page("vectors.py")
    shown = {}
    for method in ("caa", "sae_features", "feature_delta", "sae_combo", "saets"):
        at.selectbox(key="fit_method").set_value(method)
        at = at.run()
        keys = {w.key for w in at.text_input} | {w.key for w in at.number_input}
        shown[method] = ("fit_weights" in keys, "fit_top" in keys)
    assert shown == {"caa": (False, False), "sae_features": (False, True), "feature_delta": (False, False),
                     "sae_combo": (True, False), "saets": (True, True)}


def test_trained_methods_fit_with_their_settings_and_a_stop_leaves_nothing(app_env, one_thread):
    """Issue 18: LoReFT/LoReST/BiPO fit from the page with steps, learning rate and rank; the saved
    adaptor steers through its own operator; a run interrupted in training (Stop) saves nothing."""
    from steering_core.vectors.store import VectorStore

    at = _page("vectors.py")
    at.selectbox(key="fit_dataset").set_value("example: wedding_vs_neutral")
    at.number_input(key="fit_layer").set_value(1)
    at.selectbox(key="fit_method").set_value("lorest")
    at = at.run()
    at.number_input(key="fit_steps_lorest").set_value(5)
    at.number_input(key="fit_rank_lorest").set_value(2)
    at.text_input(key="fit_name").set_value("w-lorest")
    at = _button(at, "fit_go")
    assert not at.exception and "Saved **w-lorest**" in _text(at), _text(at)[-500:]
    assert not at.number_input(key="fit_rank_lorest").disabled
    store = VectorStore(app_env)
    vec = store.load("w-lorest")
    assert vec.method == "lorest" and vec.operator.startswith("lorest_") and vec.meta.get("rank", 2) == 2
    at.selectbox(key="fit_method").set_value("bipo")
    at = at.run()
    assert at.number_input(key="fit_rank_bipo").disabled  # BiPO trains a vector: no rank
    assert "needs SAE" not in at.selectbox(key="fit_method").format_func("bipo")
    at.session_state["fit_training"] = True  # as a Stop click leaves it: the run ended inside training
    at = at.run()
    assert "Training stopped; nothing was saved." in _text(at)
    assert store.names() == ["w-lorest"]
    store.close()


def test_bad_feature_weights_and_existing_names_get_messages(app_env):
    at = _fit(_page("vectors.py"), "sae_combo", "combo", weights="12:abc")
    assert at.error and "id:weight" in at.error[0].value
    at = _fit(at, "caa", "dup")
    at = _fit(at, "caa", "dup")
    assert at.error and "exists" in at.error[0].value.lower()


def test_what_does_it_do_lists_and_measures(app_env):
    at = _fit(_page("vectors.py"), "caa", "wv")
    at.selectbox(key="what_pick").set_value("wv")
    at = at.run()
    text = _text(at)
    assert "**Cosine-similar features**" in text and "**Predicted effects**" in text
    n_tables = len(at.dataframe)
    at = _button(at, "what_measure")
    assert not at.exception, at.exception
    assert "α = " in _text(at) and len(at.dataframe) > n_tables
    # a vector for another block than the pack's SAE cannot be compared, and says so
    at = _fit(at, "caa", "wv2", layer=0)
    at.selectbox(key="what_pick").set_value("wv2")
    at = at.run()
    assert "steers block 0" in _text(at)


def test_a_vectors_link_opens_what_does_it_do_on_its_vector_and_the_address_follows(app_env):
    at = _fit(_fit(_page("vectors.py"), "caa", "first"), "caa", "second")
    assert at.selectbox(key="what_pick").value == "second"  # the vector just fitted
    linked = AppTest.from_file(str(ROOT / "pages" / "vectors.py"), default_timeout=180)
    linked.query_params["vector"] = "first"
    linked = linked.run()
    assert not linked.exception and not linked.warning, [w.value for w in linked.warning]
    assert linked.selectbox(key="what_pick").value == "first" == linked.selectbox(key="lib_pick").value
    assert linked.session_state["vec_link_tab"] == "What does it do?"  # the tab the page opens first
    linked.selectbox(key="what_pick").set_value("second").run()
    assert linked.query_params["vector"] in ("second", ["second"])  # the address names what is shown

    bad = AppTest.from_file(str(ROOT / "pages" / "vectors.py"), default_timeout=180)
    bad.query_params["vector"] = "nope"
    bad = bad.run()
    assert not bad.exception and any("vector='nope' was ignored: there is no saved vector" in w.value
                                     for w in bad.warning)
    assert bad.selectbox(key="what_pick").value == "first"  # the page's own default stands


def test_combine_and_sweeps_draw_their_results(app_env):
    at = _fit(_page("vectors.py"), "caa", "a")
    at = _fit(at, "pca_diff", "b")
    at.selectbox(key="ar_a").set_value("a")
    at.selectbox(key="ar_b").set_value("b")
    at.text_input(key="ar_name").set_value("a minus b")
    at = _button(at, "ar_go")
    assert "Saved a minus b" in _text(at)
    at = _button(at, "ar_go")  # the same name again: the page's own remedy, not the library's keyword
    assert at.error and "already exists; type another name under 'Save the result as'" in at.error[0].value
    assert "overwrite=True" not in at.error[0].value
    at.selectbox(key="ls_dataset").set_value("example: positive_vs_negative")
    at = _button(at, "ls_go")
    assert not at.exception, at.exception
    assert "Best held-out separation at block" in _text(at)
    assert "d′" in _text(at) and "a bootstrap over the held-out pairs for d′" in _text(at)
    assert "held-out pairs (95 % interval" in _text(at)
    ls = at.session_state["ls_result"]["scores"]
    assert all(s.accuracy_lo <= s.pair_accuracy <= s.accuracy_hi for s in ls)
    assert not any("other settings" in w.value for w in at.warning)
    # audit: another dataset left the old chart up with no word; now it says the result is stale
    at.selectbox(key="ls_dataset").set_value("example: wedding_vs_neutral")
    at = at.run()
    assert any("other settings (dataset changed since)" in w.value for w in at.warning)
    at = _button(at, "de_go")
    assert not at.exception, at.exception
    assert max(p.n_pairs for p in at.session_state["de_result"]["points"]) == 35
    assert {p.n_heldout for p in at.session_state["de_result"]["points"]} == {9}
    assert any("same 9 held-out pairs: with that few, even 9 of 9 right has a 95 % interval of 0.70–1.00" in c.value
               for c in at.caption)
    assert any("standard deviation over 3 random subsets" in c.value for c in at.caption)
    at.number_input(key="de_layer").set_value(0)
    at = at.run()
    assert any("other settings (layer changed since)" in w.value for w in at.warning)
    # one subset per point: no bars and a sentence saying why (a zero-width bar claimed exact points)
    at.number_input(key="de_repeats").set_value(1)
    at = _button(at, "de_go")
    assert any("No error bars: one subset per point" in c.value for c in at.caption)
    assert not any("standard deviation over" in c.value for c in at.caption)


# -- prompt-pair metrics in Data efficiency (issue 19) --------------------------------------------------------


def test_data_efficiency_on_the_prompt_pair_metrics_with_labelled_target_features(app_env):
    import json

    from steering_core import load_model
    from steering_core.browse.rows import feature_table
    from steering_core.datasets import load_example
    from steering_core.measure.prompt_pairs import (
        FeatureSelection,
        feature_texts,
        final_token_features,
        find_target_features,
        firing_share,
    )
    from steering_core.model.saes import load_sae
    from steering_core.pack.reader import FeaturePack
    from steering_core.vectors.methods import METHODS

    # a share that some features of the tiny pack's SAE (40 features, 4 active per token) reach
    model = load_model("tiny")
    sae = load_sae(str(app_env / "pack" / "sae"), model)
    ds = load_example("wedding_vs_neutral")
    train = [i for i, p in enumerate(ds.pairs) if p.split != "heldout"]
    shares = firing_share(final_token_features(model, sae, feature_texts(ds, train)[0]))
    share = round(float(shares.sort(descending=True).values[2]) - 0.005, 3)
    want = find_target_features(model, sae, ds, FeatureSelection(share=share, off_target=8))
    assert len(want.target) >= 3

    at = _page("vectors.py")
    at.selectbox(key="de_dataset").set_value("example: wedding_vs_neutral")
    at.radio(key="de_mode").set_value("prompt-pair metrics ([Purchase 2025] §3.2.2)")
    at = at.run()
    assert not at.exception, at.exception
    at.number_input(key="de_share").set_value(share)
    at.number_input(key="de_off").set_value(8)
    at.number_input(key="de_repeats").set_value(2)
    at.multiselect(key="de_methods").set_value(["caa", "ace"])
    at = _button(at, "de_tf_go")
    assert not at.exception, at.exception
    labels = feature_table(FeaturePack(app_env / "pack"))
    eff = at.tabs[4]
    tables = [d.value for d in eff.dataframe]
    target = tables[0]
    assert list(target["feature"]) == list(want.target)
    assert list(target["label"]) == [labels.label_of(f) for f in want.target]
    assert any(labels.label_of(f) for f in want.target)  # the tiny pack labels its features
    assert {"positive share", "negative share", "positive mean", "negative mean"} <= set(target.columns)
    if want.off_target:  # features silent on both sides (the tiny SAE may have none)
        assert list(tables[1]["feature"]) == list(want.off_target)
        assert list(tables[1]["label"]) == [labels.label_of(f) for f in want.off_target]
    assert f"**Target features** ({len(want.target)}, from 35 training pairs" in _text(at)
    assert f"**Off-target features** ({len(want.off_target)} drawn from the {want.n_silent:,}" in _text(at)

    at = _button(at, "de_pp_go")
    assert not at.exception, at.exception
    name, res = at.session_state["de_pp_result"]
    assert name == "example: wedding_vs_neutral" and res.features == want
    assert {p.method for p in res.points} == {"caa", "ace"}
    charts = [json.loads(c.proto.spec) for c in at.tabs[4].get("plotly_chart")]

    def nums(values) -> list[float]:  # plotly's JSON writes NaN as null
        return [math.nan if v is None else v for v in values]

    assert [c["layout"]["title"]["text"] for c in charts] == ["target-feature activation", "off-target activation",
                                                            "generated-word similarity"]
    for chart, metric in zip(charts, ("target", "off_target", "word_similarity")):
        assert chart["layout"]["xaxis"]["type"] == "log"
        by_name = {t["name"]: t for t in chart["data"]}
        assert set(by_name) == {METHODS["caa"].label, METHODS["ace"].label}
        for m in ("caa", "ace"):  # a line per method: mean over resamples, SD as error bars
            t, curve = by_name[METHODS[m].label], res.curve(metric, m)
            assert t["x"] == [p.n_pairs for p in curve]
            assert nums(t["y"]) == pytest.approx([p.mean for p in curve], nan_ok=True)  # NaN: no off-target features
            assert nums(t["error_y"]["array"]) == pytest.approx([p.sd for p in curve], nan_ok=True)
        lines = nums([sh["y0"] for sh in chart["layout"].get("shapes", [])])
        assert lines[0] == pytest.approx(res.baseline[metric], nan_ok=True)  # the unsteered level, dashed
    assert f"took {res.seconds:.1f} s" in _text(at)


def test_a_layer_sweep_on_one_held_out_pair_says_it_cannot_pick_a_layer(app_env):
    """Audit: on a 3-pair dataset the sweep named a best block from one held-out pair and printed
    "d′ nan"; it now says that is too few, and writes no nan."""
    from steering_core.datasets import ContrastiveDataset, Pair
    from steering_core.storage.library import open_library

    lib = open_library(app_env / "library.duckdb")
    lib.datasets.save(ContrastiveDataset("tiny-set", [Pair("a good day", "a bad day"), Pair("good food", "bad food"),
                                                      Pair("good news", "bad news", "heldout")]))
    at = _page("vectors.py")
    at.selectbox(key="ls_dataset").set_value("saved: tiny-set")
    at = _button(at, "ls_go")
    assert not at.exception, at.exception
    assert any(w.value.startswith("Only 1 held-out pair: too few to pick a layer") for w in at.warning)
    assert "nan" not in _text(at)
