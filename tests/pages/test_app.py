"""The Streamlit app, driven headlessly with AppTest on the tiny random model and SAE."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui


@pytest.fixture(autouse=True)
def _tiny_app(monkeypatch):
    """Pages in these tests run on the tiny model (set per test, so nothing leaks into others)."""
    monkeypatch.setenv("STEERING_MODEL", "tiny")
    monkeypatch.setenv("STEERING_SAE", "tiny")


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Saved vectors, presets and caches of these tests go to a temporary folder, never cache/."""
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path / "cache"))


def _app(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=120)
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [str(m.value) for m in at.metric]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    parts += [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def test_home_shows_model_sae_hook_and_norm():
    at = _app("app.py").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    header = at.markdown[0].value
    assert "`tiny-llama-2x64`" in header and "`blocks.1.hook_resid_post`" in header
    assert "`tiny-random-128`" in header
    assert metrics["Layers"] == "2" and metrics["SAE features"] == "128"
    assert float(metrics["Residual norm (layer 1)"]) > 0


def _steer(**set_values) -> AppTest:
    at = _app("pages/steer.py").run()
    assert not at.exception, at.exception
    for key, value in set_values.items():
        for kind in ("text_input", "text_area", "number_input", "slider", "radio", "toggle"):
            try:
                w = getattr(at, kind)(key=key)
            except KeyError:
                continue
            w.set_value(value)
            break
        else:
            raise KeyError(key)
    at.run()
    return at


def test_steer_page_generates_side_by_side_and_steering_changes_text():
    at = _steer(vec_feature="5", alpha=5.0, temperature=0.0, max_tokens=12, n_samples=2, prompt="hello")
    assert not at.exception, at.exception
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    unsteered = [i.value for i in at.info]
    steered = [s.value for s in at.success]
    assert len(unsteered) == 2 and len(steered) == 2
    assert unsteered != steered  # the vector did something visible
    at.slider(key="alpha").set_value(0.0).run()
    at.button(key="generate").click().run()
    assert [i.value for i in at.info] == [s.value for s in at.success]  # α = 0 → identical columns


@pytest.mark.parametrize(
    "values,message",
    [
        ({"vec_feature": "-3"}, "does not exist"),
        ({"vec_feature": "abc"}, "whole number"),
        ({"vec_feature": "999999"}, "does not exist"),
    ],
)
def test_steer_page_bad_feature_ids_get_a_message(values, message):
    at = _steer(**values)
    assert not at.exception
    assert any(message in e.value for e in at.error)
    assert at.button(key="generate").disabled


def test_steer_page_empty_prompt_and_absurd_max_tokens():
    at = _steer(prompt="   ", temperature=0.0)
    at.button(key="generate").click().run()
    assert not at.exception
    assert any("empty" in e.value for e in at.error)
    at = _steer(prompt="hi", max_tokens=1_000_000, temperature=0.0)
    at.button(key="generate").click().run()
    assert not at.exception
    assert any("clamped" in w.value for w in at.warning)
    assert len(at.success) == 2


def test_model_picker_offline_name_explains_and_keeps_serving():
    at = _app("app.py").run()
    at.sidebar.radio(key="picker_kind").set_value("TransformerLens name").run()
    at.sidebar.text_input(key="picker_tl").set_value("gpt2-small").run()
    at.sidebar.button(key="picker_load").click().run()
    assert not at.exception
    assert any("offline" in e.value or "not on this machine" in e.value for e in at.error)
    assert "`tiny-llama-2x64`" in at.markdown[0].value


def test_home_shows_the_feature_pack_quality(tiny_pack_build, monkeypatch):
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tiny_pack_build))
    monkeypatch.setenv("STEERING_SAE", str(tiny_pack_build / "pack" / "sae"))
    at = _app("app.py").run()
    assert not at.exception, at.exception
    text = _text(at)
    assert "Feature pack" in [h.value for h in at.subheader]
    assert "live features" in text and "SAE explained variance" in text and "approximator held-out R²" in text
    # the reliability figures a researcher reads before trusting an effect, each named in words
    from steering_core.browse.glossary import summary_texts
    from steering_core.pack.reader import FeaturePack
    from steering_core.pack.reliability import overlap_spread

    pack = FeaturePack(tiny_pack_build / "pack")
    try:
        s = pack.summary()
        spread = overlap_spread(pack, "reference_top10_overlap")
        lines = summary_texts(s, lambda key: overlap_spread(pack, key))
    finally:
        pack.close()
    # "(median of 10)" read as ten features: it says what the median is over, and its spread
    n, q1, q3 = spread
    assert (f"**reference top-10 overlap, raw**: {s['reference_top10_overlap']:g} of 10 (median over {n} features; "
            f"middle half {q1:g}–{q3:g})") in text
    assert f"**steered rollouts per feature**: {s['steered_rollouts']}" in text
    assert all(f"**{label}**: {value}" in text for label, value in lines.items())  # every figure, in words
    # the SAE's explained variance with its SE, and without the attention sinks
    assert f"**SAE explained variance, all held-out tokens**: {s['explained_variance']:.3g} ± " in text
    assert "**SAE explained variance without the massive-activation tokens**: " in text
    assert f"**massive-activation tokens (attention sinks)**: {s['massive_tokens']:,} of {s['heldout_tokens']:,}" in text


def test_steer_page_automatic_alpha_sets_the_slider():
    from steering_core import load_model
    from steering_core.measure.alpha import auto_alpha
    from steering_core.model.saes import load_sae

    at = _steer(vec_feature="5")
    at.button(key="auto_alpha").click().run()
    assert not at.exception, at.exception
    note = next(c.value for c in at.caption if c.value.startswith("Automatic α ="))
    assert "checked ΔCE" in note
    model = load_model("tiny")
    sae = load_sae("tiny", model)
    layer = at.slider(key="layer").value
    expected = float(auto_alpha(model, layer, sae.decoder_direction(5)).alpha[0])
    limit = float(max(1.0, round(3 * model.residual_norms()[layer])))
    assert at.slider(key="alpha").value == pytest.approx(max(-limit, min(limit, expected)), rel=1e-3)


def test_steer_presets_and_extra_vectors(tmp_path):
    from steering_core import random_unit_vector
    from steering_core.vectors import SteeringVector, VectorStore

    store = VectorStore(tmp_path / "cache")
    store.save(SteeringVector("extra-one", 1, random_unit_vector(64, 7) * 3, method="manual"))
    store.close()
    at = _steer(vec_feature="5", alpha=5.0, temperature=0.0, max_tokens=6, n_samples=1, prompt="hello")
    at.multiselect(key="extra_vectors").set_value(["extra-one"]).run()
    at.number_input(key="extra_alpha_extra-one").set_value(30.0).run()
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    with_extra = at.session_state["steer_last"]["steered"]
    at.text_input(key="preset_name").set_value("my preset").run()
    at.button(key="preset_save").click().run()
    assert any("Saved preset my preset" in m.value for m in at.success)
    at.button(key="preset_save").click().run()  # helper audit: the same name again said "Saved" as if new
    assert any("Replaced preset my preset with these settings." in m.value for m in at.success)
    # change everything, then load the preset back
    at.multiselect(key="extra_vectors").set_value([]).run()
    at.slider(key="alpha").set_value(-5.0).run()
    at.button(key="generate").click().run()
    assert at.session_state["steer_last"]["steered"] != with_extra
    at.selectbox(key="preset_pick").set_value("my preset").run()
    at.button(key="preset_load").click().run()
    assert not at.exception, at.exception
    assert at.slider(key="alpha").value == 5.0 and at.multiselect(key="extra_vectors").value == ["extra-one"]
    at.button(key="generate").click().run()
    assert at.session_state["steer_last"]["steered"] == with_extra


def test_a_preset_that_no_longer_fits_says_so_instead_of_loading_other_settings(tmp_path):
    """Audit: a preset whose saved vector was deleted silently steered with another vector, and a
    hand-edited one with layer 'abc' crashed the page with int()'s message."""
    from steering_core import random_unit_vector
    from steering_core.storage.presets import PresetStore
    from steering_core.vectors import SteeringVector, VectorStore

    store = VectorStore(tmp_path / "cache")
    store.save(SteeringVector("still-here", 1, random_unit_vector(64, 7) * 3, method="manual"))
    store.close()
    with PresetStore(tmp_path / "cache" / "library.duckdb") as presets:
        presets.save("deleted", {"vec_source": ui_source("SAVED"), "vec_saved": "gone", "alpha": 5.0, "seed": 9})
        presets.save("odd", {"vec_source": ui_source("SAE_FEATURE"), "vec_feature": "5", "layer": "abc", "seed": 9})
    at = _steer(seed=1)
    at.selectbox(key="preset_pick").set_value("deleted").run()
    at.button(key="preset_load").click().run()
    assert not at.exception, at.exception
    assert any("Nothing was loaded: this preset steers with saved vector 'gone'" in w.value for w in at.warning)
    assert at.number_input(key="seed").value == 1  # nothing of it applied
    at.selectbox(key="preset_pick").set_value("odd").run()
    at.button(key="preset_load").click().run()
    assert not at.exception, at.exception
    assert any("The preset's layer 'abc' was not applied" in w.value for w in at.warning)
    assert at.number_input(key="seed").value == 9 and at.text_input(key="vec_feature").value == "5"


def ui_source(member: str) -> str:

    return str(getattr(ui.SteerSource, member))


def test_steer_multi_turn_chat_keeps_a_history_per_column():
    at = _steer(vec_feature="5", alpha=8.0, temperature=0.0, max_tokens=5, n_samples=1, prompt="hello")
    at.toggle(key="chat_mode").set_value(True).run()
    at.button(key="generate").click().run()
    at.text_area(key="prompt").set_value("and then?").run()
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    hu, hs = at.session_state["hist_u"], at.session_state["hist_s"]
    assert [u for u, _ in hu] == [u for u, _ in hs] == ["hello", "and then?"]
    assert hu != hs  # the steered column's replies are its own
    assert any("continues from each column's first sample" in c.value for c in at.caption)
    assert any(m.value.startswith("**You:** hello") for m in at.markdown)
    # helper audit: chat switched off left the last reply up as if it answered the plain prompt
    at.toggle(key="chat_mode").set_value(False).run()
    assert any("multi-turn chat on → off" in i.value for i in at.info), [i.value for i in at.info]
    at.toggle(key="chat_mode").set_value(True).run()
    assert not any("multi-turn chat" in i.value for i in at.info)
    at.button(key="chat_reset").click().run()
    assert at.session_state["hist_u"] == [] and at.session_state["hist_s"] == []
    assert "steer_last" not in at.session_state  # its replies belonged to the reset conversation
