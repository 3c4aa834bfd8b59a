"""Page hand-offs (ui.goto_steer, ui.goto_sweep, ui.goto_features), driven through the pages with
AppTest on the tiny model and a tiny pack: the target page opens filled in, a later hand-off
replaces an earlier one, and no widget is given a default while a hand-off sets it."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def duplicated_widget_state(monkeypatch) -> list[str]:
    """Streamlit's warnings "widget … created with a default value but also had its value set via
    the Session State API", collected. Streamlit checks this only inside a server (not under
    AppTest) and logs it once per process, so the check is switched on and re-armed here."""
    from streamlit import runtime
    from streamlit.elements.lib import policies

    warned: list[str] = []
    monkeypatch.setattr(runtime, "exists", lambda: True)
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *args, **_kw: warned.append(msg % args))
    return warned


def _hand_off(at: AppTest, button: str, title: str) -> AppTest:
    """Click a hand-off button; the run must end on the page titled ``title`` without an error."""
    at = at.button(key=button).click().run()
    assert not at.exception, at.exception
    assert title in [t.value for t in at.title]
    return at


def _vectors_app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.switch_page("pages/vectors.py")
    return at.run()


def _steers_with_saved(at: AppTest, name: str, layer: int) -> None:
    """The Steer page, opened by a hand-off, is set to the saved vector ``name`` at ``layer``."""
    assert at.radio(key="vec_source").value == ui.SteerSource.SAVED
    assert at.selectbox(key="vec_saved").value == name
    assert at.slider(key="layer").value == layer


def _features_app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/features.py")
    return at.run()


def _open_card(at: AppTest, fid: int) -> AppTest:
    at.radio(key="search_mode").set_value("Feature id")
    at.text_input(key="search_query").set_value(str(fid))
    return at.run()


def _pack_feature(cache: Path, fid: int) -> tuple[int, float | None]:
    from steering_core.pack.reader import FeaturePack

    pack = FeaturePack(cache / "pack")
    try:
        return int(pack.meta.get("layer", 0)), pack.feature(fid).get("alpha")
    finally:
        pack.close()


def _expected_alpha(at: AppTest, alpha: float) -> float:
    """The α the Steer page shows for a handed-over α: rounded to 0.1, clamped to the slider."""
    slider = at.slider(key="alpha")
    return max(slider.min, min(slider.max, round(alpha, 1)))


def test_steer_with_this_feature_fills_the_steer_page_and_a_second_hand_off_replaces_it(
        app_env, duplicated_widget_state):
    layer, alpha3 = _pack_feature(app_env, 3)
    _, alpha5 = _pack_feature(app_env, 5)
    assert alpha3 and alpha5, "the tiny pack stores a loss-matched α for these features"

    at = _open_card(_features_app(), 3)
    at = _hand_off(at, "card_3_steer", "Steer")
    assert at.radio(key="vec_source").value == ui.SteerSource.SAE_FEATURE
    assert at.text_input(key="vec_feature").value == "3"
    assert at.slider(key="layer").value == layer
    assert at.slider(key="alpha").value == pytest.approx(_expected_alpha(at, alpha3))
    assert not at.error, [e.value for e in at.error]

    at.switch_page("pages/features.py")
    at = _open_card(at.run(), 5)
    at = _hand_off(at, "card_5_steer", "Steer")
    assert at.text_input(key="vec_feature").value == "5"  # the second hand-off replaced the first
    assert at.slider(key="layer").value == layer
    assert at.slider(key="alpha").value == pytest.approx(_expected_alpha(at, alpha5))
    assert duplicated_widget_state == []


def test_steer_page_hands_a_feature_to_the_sweep_page(app_env, duplicated_widget_state):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/steer.py")
    at = at.run()
    at.text_input(key="vec_feature").set_value("4")
    at.run()
    at.slider(key="alpha").set_value(2.0)
    at = at.run()
    at = _hand_off(at, "sweep_here", "Sweep α")
    assert at.radio(key="sw_source").value == ui.SweepSource.SAE_FEATURE
    assert at.text_input(key="sw_feature").value == "4"
    assert at.radio(key="sw_mode").value == ui.SweepGrid.MANUAL
    assert at.text_input(key="sw_grid").value == "0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0"
    assert duplicated_widget_state == []


def test_a_saved_vector_goes_from_the_vectors_page_to_the_steer_page(app_env, duplicated_widget_state):
    from steering_core import random_unit_vector
    from steering_core.vectors import SteeringVector, VectorStore

    store = VectorStore(app_env)
    store.save(SteeringVector("handed-over", 0, random_unit_vector(64, 3) * 2, method="manual"))
    store.close()
    at = _vectors_app()
    at.selectbox(key="lib_pick").set_value("handed-over")
    at = at.run()
    _steers_with_saved(_hand_off(at, "lib_steer", "Steer"), "handed-over", 0)
    assert duplicated_widget_state == []


def test_hand_offs_take_exactly_one_vector():
    with pytest.raises(ValueError):
        ui.goto_steer()
    with pytest.raises(ValueError):
        ui.goto_sweep(feature=1, vector="v")


def test_a_vector_just_fitted_goes_to_the_steer_page(app_env, duplicated_widget_state):
    """After a fit the next step is steering with it: the success message stays, with a button."""
    at = _vectors_app()
    at.selectbox(key="fit_dataset").set_value("example: wedding_vs_neutral")
    at.number_input(key="fit_layer").set_value(0)
    at.text_input(key="fit_name").set_value("just-fitted")
    at = at.button(key="fit_go").click().run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Saved **just-fitted**") for s in at.success)
    at = at.run()  # any later run still shows what was saved, with the way on
    assert any(s.value.startswith("Saved **just-fitted**") for s in at.success)
    _steers_with_saved(_hand_off(at, "fit_steer", "Steer"), "just-fitted", 0)
    assert duplicated_widget_state == []


def test_every_uploader_states_the_librarys_own_limit():
    """Streamlit's uploader says "200MB per file" unless told; the library refuses datasets over
    5 MB and vector files over 64 MiB, so each uploader is given its limit (a user-style audit saw
    "200MB" above a 5 MB limit)."""
    import re

    from steering_core.datasets import MAX_UPLOAD_BYTES
    from steering_core.vectors.uploads import MAX_VECTOR_FILE_BYTES

    assert ui.upload_mb(MAX_UPLOAD_BYTES) == 5 and ui.upload_mb(MAX_VECTOR_FILE_BYTES) == 64
    assert ui.upload_mb(64_000) == 1  # never 0, which would refuse everything
    for page in (ROOT / "pages").glob("*.py"):
        calls = re.findall(r"file_uploader\((.*?)\)\n", page.read_text(), flags=re.S)
        assert all("max_upload_size=ui.upload_mb(" in c for c in calls), page.name
