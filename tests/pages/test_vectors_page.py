"""The Vectors page (AppTest, tiny model and tiny pack) keeps its selectors on the vector just made,
refuses a taken name before extracting anything, and warns when the 'last' position would learn a
token every pair shares; plus the library checks behind them."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def duplicated_widget_state(monkeypatch) -> list[str]:
    """Streamlit's "created with a default value but also had its value set via the Session State
    API" warnings, collected (switched on outside a server, as in tests/ui/test_ui_handoffs.py)."""
    from streamlit import runtime
    from streamlit.elements.lib import policies

    warned: list[str] = []
    monkeypatch.setattr(runtime, "exists", lambda: True)
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *args, **_kw: warned.append(msg % args))
    return warned


@pytest.fixture()
def extractions(monkeypatch) -> list[int]:
    """Counts the fit's activation extractions (one entry per call)."""
    import steering_core.vectors.fitting as fitting

    calls: list[int] = []
    real = fitting.pair_activations

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fitting, "pair_activations", counted)
    return calls


def _page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "vectors.py"), default_timeout=180).run()


def _fit(at: AppTest, name: str, method: str = "caa", overwrite: bool = False) -> AppTest:
    at.selectbox(key="fit_dataset").set_value("example: wedding_vs_neutral")
    at.number_input(key="fit_layer").set_value(1)
    at.selectbox(key="fit_method").set_value(method)
    at.text_input(key="fit_name").set_value(name)
    at.checkbox(key="fit_overwrite").set_value(overwrite)
    at = at.button(key="fit_go").click().run()
    assert not at.exception, at.exception
    return at


# -- bug: the selectors kept the first vector ----------------------------------------------------------


def test_a_second_fit_is_selected_in_library_and_what_does_it_do(app_env, duplicated_widget_state):
    at = _fit(_page(), "a-first")
    assert at.selectbox(key="what_pick").value == "a-first"
    at = _fit(at, "b-second", method="pca_diff")
    assert "Saved **b-second**" in [s.value for s in at.success][0]
    assert at.selectbox(key="what_pick").value == "b-second"
    assert at.selectbox(key="lib_pick").value == "b-second"
    # a vector made by arithmetic is selected too, in the same run
    at.selectbox(key="ar_a").set_value("a-first")
    at.selectbox(key="ar_b").set_value("b-second")
    at.text_input(key="ar_name").set_value("c-combo")
    at = at.button(key="ar_go").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="lib_pick").value == "c-combo"
    assert at.selectbox(key="what_pick").value == "c-combo"
    assert "c-combo" in at.selectbox(key="lib_pick").options
    # a choice made by hand stays until the next vector is made
    at.selectbox(key="what_pick").set_value("a-first")
    at = at.run()
    assert at.selectbox(key="what_pick").value == "a-first"
    assert duplicated_widget_state == []


def test_deleting_the_selected_vector_falls_back_to_another(app_env):
    at = _fit(_fit(_page(), "a-keep"), "b-gone")
    assert at.selectbox(key="lib_pick").value == "b-gone"
    at = at.button(key="lib_delete").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="lib_pick").value == "a-keep"
    assert at.selectbox(key="what_pick").value == "a-keep"


# -- bug: a taken name failed only after the extraction ------------------------------------------------


def test_a_taken_name_is_refused_before_any_extraction(app_env, extractions):
    at = _fit(_page(), "dup")
    assert len(extractions) == 1
    at = _fit(at, "dup")
    assert len(extractions) == 1, "the name must be checked before extracting activations"
    assert at.error and "tick 'Overwrite a vector with that name'" in at.error[0].value
    assert "overwrite=True" not in at.error[0].value
    at = _fit(at, "dup", overwrite=True)  # with the box ticked the fit goes ahead
    assert not at.error and len(extractions) == 2
    assert "Saved **dup**" in at.success[0].value
    # the default name is checked the same way
    at = _fit(at, "")
    at = _fit(at, "")
    assert len(extractions) == 3 and "wedding_vs_neutral-caa-L1" in at.error[0].value


def test_a_bad_name_is_refused_before_any_extraction(app_env, extractions):
    at = _fit(_page(), "../escape")
    assert at.error and not extractions


def test_store_check_name(tmp_path):
    from steering_core import random_unit_vector
    from steering_core.errors import VectorError
    from steering_core.vectors import SteeringVector, VectorStore

    with VectorStore(tmp_path) as store:
        assert store.check_name(" new ") == "new"
        store.save(SteeringVector("taken", 0, random_unit_vector(8, 0), method="manual"))
        assert store.check_name("taken", overwrite=True) == "taken"
        with pytest.raises(VectorError, match="already exists; delete it first or save with overwrite=True"):
            store.check_name("taken")
        with pytest.raises(VectorError, match="already exists; tick the box"):
            store.check_name("taken", remedy="tick the box")
        with pytest.raises(VectorError, match="capitals"):
            store.check_name("TAKEN", overwrite=True)
        with pytest.raises(VectorError):
            store.check_name("a/b")


# -- the 'last' position on pairs that end alike ---------------------------------------------------------


def _dataset(endings: list[tuple[str, str]]):
    from steering_core.datasets import ContrastiveDataset, Pair

    return ContrastiveDataset("t", [Pair(f"Day {i} was a wedding{p}", f"Day {i} was a holiday{n}")
                                    for i, (p, n) in enumerate(endings)])


def test_position_warning_when_most_pairs_share_the_last_token(tiny_hf):
    from steering_core.vectors.fitting import position_warning

    all_dots = _dataset([(".", ".")] * 10)
    msg = position_warning(tiny_hf, all_dots, "last")
    assert msg and "100%" in msg and "'.'" in msg and "'diff'" in msg
    assert position_warning(tiny_hf, all_dots, "diff") is None
    assert position_warning(tiny_hf, all_dots, "mean") is None
    assert "90%" in position_warning(tiny_hf, _dataset([(".", ".")] * 9 + [("!", "?")]), "last")
    assert position_warning(tiny_hf, _dataset([(".", ".")] * 8 + [("!", "?")] * 2), "last") is None
    assert position_warning(tiny_hf, _dataset([("", "")] * 10), "last") is None  # they end where they differ


def test_the_fit_tab_starts_at_diff_where_last_would_learn_a_shared_token_and_warns_if_last_is_chosen(app_env):
    """The audit saw every shipped dataset's default fit set off the page's own 'last' warning."""
    at = _page()
    at.selectbox(key="fit_dataset").set_value("example: wedding_vs_neutral")
    at = at.run()
    fit_tab = 0
    assert at.selectbox(key="fit_position").value == "diff"
    assert not any("'last' position" in w.value for w in at.tabs[fit_tab].warning)
    assert any(c.value.startswith("Position 'diff' (the tokens where each pair differs) was chosen") and "'.'" in c.value
               for c in at.tabs[fit_tab].caption)
    at.selectbox(key="fit_position").set_value("last")
    at = at.run()
    assert at.selectbox(key="fit_position").value == "last"  # the user's choice stays while the dataset does
    assert any("'last' position" in w.value for w in at.tabs[fit_tab].warning)
    assert at.selectbox(key="ls_position").value == "diff"  # the layer sweep starts from the same advice


def test_suggested_position(tiny_hf):
    from steering_core.vectors.fitting import suggested_position

    assert suggested_position(tiny_hf, _dataset([(".", ".")] * 10)) == (
        "diff", "100% of its pairs end with the same token ('.') in both texts")
    assert suggested_position(tiny_hf, _dataset([("!", "?")] * 10)) == ("last", None)
