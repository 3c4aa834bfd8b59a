"""The Steer page never labels a result with settings that did not make it, and reads and writes
shareable links (/steer?feature=…&alpha=…&layer=…&prompt=…&seed=…). AppTest on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui
from steering_core.measure.links import SteerLink, parse_steer_link

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tiny_app(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_MODEL", "tiny")
    monkeypatch.setenv("STEERING_SAE", "tiny")
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path / "cache"))


def _steer(**query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "steer.py"), default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _header(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("#### Steered"))


def _generated(at: AppTest, max_tokens: int, n_samples: int) -> AppTest:
    """Steer with feature 5 at α = 4 and press Generate."""
    at.text_input(key="vec_feature").set_value("5")
    at.slider(key="alpha").set_value(4.0)
    at.number_input(key="max_tokens").set_value(max_tokens)
    at.number_input(key="n_samples").set_value(n_samples)
    at.run()
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    return at


def test_the_header_names_the_alpha_that_made_the_text_after_the_slider_moves():
    at = _steer()
    at.toggle(key="live_alpha").set_value(False)  # with live α off, moving the slider only marks the text stale
    _generated(at, max_tokens=3, n_samples=1)
    assert _header(at) == "#### Steered (α = +4.0, layer 1)"
    assert not [i.value for i in at.info if "settings changed" in i.value]
    text = at.session_state["steer_last"]["steered"]

    at.slider(key="alpha").set_value(9.0).run()  # move the slider without generating
    assert _header(at) == "#### Steered (α = +4.0, layer 1)"  # still the α that produced the text
    assert at.session_state["steer_last"]["steered"] == text
    note = next(i.value for i in at.info if "settings changed" in i.value)
    assert "Shown: α = +4.0" in note and "α +4.0 → +9.0" in note and "Generate to update" in note

    at.text_input(key="vec_feature").set_value("6").run()
    note = next(i.value for i in at.info if "settings changed" in i.value)
    assert "SAE feature 5 decoder row → SAE feature 6 decoder row" in note

    at.button(key="generate").click().run()  # generating again brings header and text up to date
    assert _header(at) == "#### Steered (α = +9.0, layer 1)"
    assert not [i.value for i in at.info if "settings changed" in i.value]


def test_before_any_generation_the_columns_say_how_to_fill_them():
    at = _steer(feature="5")
    hint = [c.value for c in at.caption if c.value.startswith("Nothing generated yet")]
    assert hint and "releasing the α slider afterwards regenerates the steered column alone" in hint[0]
    _generated(at, max_tokens=2, n_samples=1)
    assert not [c.value for c in at.caption if c.value.startswith("Nothing generated yet")]
    # both columns carry a caption, so their samples sit level
    assert any(c.value.startswith("no steering · the same prompt and row seeds") for c in at.caption)


def test_live_alpha_regenerates_the_steered_column_with_its_header_and_reuses_the_unsteered_one():
    at = _generated(_steer(), max_tokens=6, n_samples=2)
    first = dict(at.session_state["steer_last"])
    assert not first["from_cache"]
    at.slider(key="alpha").set_value(40.0).run()  # releasing the slider is the experiment
    assert not at.exception, at.exception
    now = at.session_state["steer_last"]
    assert _header(at) == "#### Steered (α = +40.0, layer 1)"  # header and text change together
    assert now["settings"].alpha == 40.0 and now["steered"] != first["steered"]
    assert now["unsteered"] == first["unsteered"] and now["from_cache"]
    assert any("from cache" in c.value for c in at.caption)
    assert not [i.value for i in at.info if "settings changed" in i.value]
    # anything but α waits for Generate
    at.text_input(key="vec_feature").set_value("6").run()
    assert at.session_state["steer_last"]["steered"] == now["steered"]
    assert any("settings changed" in i.value for i in at.info)


def test_every_setting_that_changes_the_text_marks_the_result_stale_and_the_caption_names_vector_and_seed():
    """Found by a user-style audit: a temperature change left the old text up with no note, and
    live α then did nothing while the note blamed α alone."""
    at = _generated(_steer(), max_tokens=4, n_samples=1)
    shown = at.session_state["steer_last"]["settings"]
    assert any(c.value.startswith("SAE feature 5 decoder row · seed 0 · 1 sample × 4 tokens · temperature 0.8")
               for c in at.caption), [c.value for c in at.caption]
    for key, value, says in (("temperature", 0.0, "temperature 0.8 → 0"), ("n_samples", 2, "samples 1 → 2"),
                             ("max_tokens", 5, "max new tokens 4 → 5")):
        before = at.number_input(key=key).value
        at.number_input(key=key).set_value(value).run()
        note = next(i.value for i in at.info if "settings changed" in i.value)
        assert says in note and "Generate to update" in note, note
        at.slider(key="alpha").set_value(30.0).run()  # live α cannot answer this: the unsteered column changes too
        assert at.session_state["steer_last"]["settings"] == shown
        note = next(i.value for i in at.info if "settings changed" in i.value)
        assert says in note and "α +4.0 → +30.0" in note, note
        at.number_input(key=key).set_value(before).run()
        at.slider(key="alpha").set_value(4.0).run()
        assert not [i.value for i in at.info if "settings changed" in i.value]


def test_the_operator_choice_steers_with_that_operator_and_names_it():
    """Issue 18: orthogonal decomposition and projection cap are chosen on the Steer page like any
    vector's operator; the steered column's settings name the operator, so a result made with one
    operator is never shown as another's."""
    at = _steer()
    at.toggle(key="live_alpha").set_value(False)
    at = _generated(at, max_tokens=3, n_samples=1)
    box = at.selectbox(key="vec_operator")
    labels = [o.split(":")[0] for o in box.options]  # the options as shown: "label: what it does"
    assert box.value == "add" and labels == ["addition", "orthogonal decomposition", "projection cap"]  # no ACE:
    # a decoder row has no reference point
    added = at.session_state["steer_last"]["steered"]
    box.set_value("orthogonal").run()
    assert any("settings changed" in i.value and "orthogonal" in i.value.lower() for i in at.info)
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    assert "orthogonal" in at.session_state["steer_last"]["settings"].vector.lower()
    assert _header(at).startswith("#### Steered") and added is not None


def test_the_automatic_alpha_note_belongs_to_its_vector_and_layer():
    at = _steer()
    at.text_input(key="vec_feature").set_value("5").run()
    at.button(key="auto_alpha").click().run()
    assert not at.exception, at.exception
    note = next(c.value for c in at.caption if c.value.startswith("Automatic α ="))
    assert "slider now reads" not in note
    at.slider(key="alpha").set_value(0.5).run()
    note = next(c.value for c in at.caption if c.value.startswith("Automatic α ="))
    assert "the slider now reads α = +0.5" in note
    at.text_input(key="vec_feature").set_value("6").run()
    note = next(c.value for c in at.caption if c.value.startswith("Automatic α ="))
    assert "was for SAE feature 5 decoder row at layer 1" in note and "press Automatic α again" in note


def test_a_link_fills_the_settings_and_the_url_follows_them(monkeypatch):
    from streamlit import runtime
    from streamlit.elements.lib import policies

    warned: list[str] = []  # "created with a default value but also … set via the Session State API" (bug 7)
    monkeypatch.setattr(runtime, "exists", lambda: True)
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *args, **_kw: warned.append(msg % args))
    at = _steer(feature="7", alpha="2.5", layer="0", prompt="Hello there", seed="3")
    assert warned == []
    assert at.radio(key="vec_source").value == ui.SteerSource.SAE_FEATURE
    assert at.text_input(key="vec_feature").value == "7"
    assert at.slider(key="layer").value == 0
    assert at.slider(key="alpha").value == pytest.approx(2.5)
    assert at.text_area(key="prompt").value == "Hello there"
    assert at.number_input(key="seed").value == 3
    assert not at.warning and not at.error
    assert at.query_params["feature"] == "7" and at.query_params["alpha"] == "2.5"

    at.slider(key="alpha").set_value(3.0).run()
    assert at.query_params["alpha"] == "3" and at.query_params["layer"] == "0"
    assert at.query_params["prompt"] == "Hello there" and at.query_params["seed"] == "3"


@pytest.mark.parametrize(("query", "words"), [
    ({"feature": "abc"}, "feature='abc' was ignored: a feature id is a whole number"),
    ({"feature": "100000"}, "the SAE has features 0 to 127"),
    ({"alpha": "nan"}, "α is a finite number"),
    ({"alpha": "1e6"}, "alpha=1e+06 is beyond layer 1's slider (±142): α starts at +142.0"),
    ({"layer": "99"}, "this model's layers are 0 to 1"),
    ({"seed": "-1"}, "a seed is a whole number"),
    ({"vector": "nope"}, "there is no saved vector by that name"),
    ({"prompt": " "}, "the link's prompt is empty, so the page keeps its own"),
])
def test_a_bad_link_value_gets_a_sentence_and_is_ignored(query, words):
    at = _steer(**query)
    assert any(words in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.error, [e.value for e in at.error]
    assert at.slider(key="layer").value == 1  # defaults stand
    assert at.text_input(key="vec_feature").value == "0"
    assert at.text_area(key="prompt").value == "Tell me about your weekend plans."


def test_parse_steer_link_round_trips_and_never_raises():
    link, warnings = parse_steer_link({"feature": "630", "alpha": "49.4", "layer": "15", "prompt": "a b&c",
                                       "seed": "3"}, n_layers=30, n_features=1000)
    assert not warnings
    assert link == SteerLink(feature=630, alpha=49.4, layer=15, prompt="a b&c", seed=3)
    assert parse_steer_link(link.params(), n_layers=30, n_features=1000) == (link, [])
    assert "prompt" not in SteerLink(feature=1, prompt="  ").params()  # an empty prompt is not linked
    for hostile in ({"alpha": ["1", "x"]}, {"layer": "1e999"}, {"feature": "-0.5"}, {"seed": "2" * 400},
                    {"prompt": "x" * 10_000}, {"feature": "1", "vector": "v"}, {"vector": ""}):
        link, warnings = parse_steer_link(hostile, n_layers=2, n_features=10, vector_names=["v"])
        assert warnings and all("was ignored" in w for w in warnings), (hostile, warnings)
    assert parse_steer_link({"feature": "1"}, n_layers=2)[1][0].endswith("no SAE is loaded, so there are "
                                                                         "no features to steer with.")
