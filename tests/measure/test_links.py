"""measure.links: a Sweep link (/sweep?feature=…&grid=…&keywords=…) reads back what it wrote,
never raises on what a link holds, and the Sweep page fills its settings from one and writes its
settings into the address (the Steer link's page tests are in tests/pages/test_steer_page.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steering_core.measure.links import SweepLink, VectorsLink, parse_sweep_link, parse_vectors_link
from steering_core.measure.sweep import MAX_GRID, SweepError, parse_grid

ROOT = Path(__file__).resolve().parents[2]


def test_a_sweep_link_round_trips():
    link = SweepLink(feature=630, grid=(0.0, 20.0, 40.5), keywords="wedding, party", concept="weddings",
                     prompts="I think\nWrite a story & more", samples=4, tokens=32, seed=3)
    params = link.params()
    assert params["grid"] == "0,20,40.5" and params["samples"] == "4" and "vector" not in params
    assert parse_sweep_link(params, n_features=1000) == (link, [])
    assert parse_sweep_link({"vector": "mine"}, vector_names=["mine"]) == (SweepLink(vector="mine"), [])


@pytest.mark.parametrize(("params", "words"), [
    ({"grid": "0, x, 20"}, "numbers separated by commas"),
    ({"grid": "0,inf"}, "α values must be finite; the grid contains inf"),
    ({"grid": ",".join(["1"] * (MAX_GRID + 1))}, f"at most {MAX_GRID} α values"),
    ({"samples": "0"}, "samples is a whole number from 1 to"),
    ({"tokens": "1e9"}, "tokens is a whole number from 1 to 256"),
    ({"seed": "-2"}, "a seed is a whole number"),
    ({"feature": "5000"}, "the SAE has features 0 to 9"),
    ({"feature": "1", "vector": "v"}, "not both"),
    ({"vector": "nope"}, "no saved vector by that name"),
    ({"keywords": " "}, "empty or longer than"),
    ({"prompts": "x" * 10_000}, "at most 4000 characters"),
])
def test_a_bad_sweep_link_value_is_ignored_with_a_sentence(params, words):
    link, warnings = parse_sweep_link(params, n_features=10, vector_names=["v"])
    assert len(warnings) == 1 and "was ignored" in warnings[0] and words in warnings[0], warnings
    assert all(getattr(link, k) is None for k in params if k != "feature" or "vector" not in params)


def test_a_vectors_link_round_trips_and_names_only_a_saved_vector():
    assert VectorsLink(vector="wedding caa").params() == {"vector": "wedding caa"}
    assert parse_vectors_link({"vector": " wedding caa "}, vector_names=["wedding caa"]) == (
        VectorsLink(vector="wedding caa"), [])
    for value, words in (("nope", "no saved vector by that name"), ("  ", "it names no vector")):
        link, warnings = parse_vectors_link({"vector": value}, vector_names=["wedding caa"])
        assert link == VectorsLink() and len(warnings) == 1 and words in warnings[0], warnings
    assert parse_vectors_link({}, vector_names=[]) == (VectorsLink(), [])


def test_parse_grid_reads_what_the_box_accepts():
    assert parse_grid("0, 10;20 ,") == (0.0, 10.0, 20.0)
    for bad in ("", "a, b"):
        with pytest.raises(SweepError, match="numbers separated by commas"):
            parse_grid(bad)
    with pytest.raises(SweepError, match="must be finite; the grid contains nan"):
        parse_grid("0, nan")


def test_the_sweep_page_opens_a_link_and_writes_its_settings_back(sweep_page_app, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "sweep.py"), default_timeout=180)
    for key, value in {"feature": "3", "grid": "0,5,10", "keywords": "cake, bride", "concept": "weddings",
                       "prompts": "Hello\nOnce upon a time", "samples": "2", "tokens": "8", "seed": "7"}.items():
        at.query_params[key] = value
    at = at.run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]
    assert at.radio(key="sw_source").value == "SAE feature (decoder row)"
    assert at.text_input(key="sw_feature").value == "3"
    assert at.radio(key="sw_mode").value == "Manual" and at.text_input(key="sw_grid").value == "0, 5, 10"
    assert at.text_input(key="sw_keywords").value == "cake, bride" and at.checkbox(key="sw_use_kw").value
    assert at.text_input(key="sw_concept").value == "weddings" and at.checkbox(key="sw_use_sim").value
    assert at.text_area(key="sw_prompts").value == "Hello\nOnce upon a time"
    assert (at.number_input(key="sw_samples").value, at.number_input(key="sw_tokens").value,
            at.number_input(key="sw_seed").value) == (2, 8, 7)
    at.number_input(key="sw_seed").set_value(9).run()  # the address follows the settings
    assert at.query_params["seed"] == ["9"] or at.query_params["seed"] == "9"
    assert at.query_params["grid"] in ("0,5,10", ["0,5,10"])

    bad = AppTest.from_file(str(ROOT / "pages" / "sweep.py"), default_timeout=180)
    bad.query_params["grid"] = "0, x"
    bad = bad.run()
    assert any("grid='0, x' was ignored" in w.value for w in bad.warning)
    assert bad.radio(key="sw_mode").value != "Manual"  # the default stands


def test_a_mistyped_parameter_is_said_not_silently_dropped():
    """A shared /steer?alhpa=50 kept the page's own α without a word: the reader believed α was 50."""
    from steering_core.measure.links import parse_steer_link

    link, warnings = parse_steer_link({"feature": "3", "alhpa": "50", "embed": "true"}, n_layers=4, n_features=40)
    assert link.feature == 3 and link.alpha is None
    assert warnings == ["The link's 'alhpa' was ignored: this page's links take feature, vector, layer, alpha, "
                        "seed, prompt."]  # Streamlit's own embed parameter is not reported
    _, warnings = parse_sweep_link({"feature": "3", "sampels": "8"}, n_features=40)
    assert len(warnings) == 1 and warnings[0].startswith("The link's 'sampels' was ignored: this page's links take "
                                                         "feature, vector, grid, keywords")
    _, warnings = parse_vectors_link({"vector": "a", "tab": "x"}, vector_names=["a"])
    assert warnings == ["The link's 'tab' was ignored: this page's links take vector."]


def test_a_datasets_link_round_trips_and_says_what_it_cannot_open():
    from steering_core.measure.links import DatasetsLink, parse_datasets_link

    names, examples = ["mine"], ["london_vs_paris", "wedding_vs_neutral"]
    for link in (DatasetsLink(dataset="mine"), DatasetsLink(example="london_vs_paris")):
        assert parse_datasets_link(link.params(), saved_names=names, example_names=examples) == (link, [])
    link, warnings = parse_datasets_link({"dataset": "gone", "example": "nope", "exmaple": "x"},
                                         saved_names=names, example_names=examples)
    assert link == DatasetsLink()
    assert warnings == [
        "The link's dataset='gone' was ignored: there is no saved dataset by that name in this library.",
        "The link's example='nope' was ignored: there is no such example (the examples: london_vs_paris, "
        "wedding_vs_neutral).",
        "The link's 'exmaple' was ignored: this page's links take dataset, example."]
    link, warnings = parse_datasets_link({"dataset": "mine", "example": "london_vs_paris"}, saved_names=names,
                                         example_names=examples)
    assert link == DatasetsLink(dataset="mine") and "the saved one is opened" in warnings[0]
