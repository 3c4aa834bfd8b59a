"""The Sweep page (AppTest) on the tiny model and its tiny SAE: a manual sweep with curves and
samples, the cache on reopening, bad grids, and the next-token view."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture(autouse=True)
def _tiny_app(monkeypatch):
    """Pages in these tests run on the tiny model (set per test, so nothing leaks into others)."""
    monkeypatch.setenv("STEERING_MODEL", "tiny")


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def page(sweep_page_app):
    return sweep_page_app


def _sweep(at: AppTest, grid: str) -> AppTest:
    from conftest import run_manual_sweep

    return run_manual_sweep(at, grid)


def test_manual_sweep_draws_curves_and_keeps_samples(page):
    at = _sweep(page, "0, 5, 20")
    assert not at.exception, at.exception
    res = at.session_state["sw_result"]
    assert [p.alpha for p in res["points"]] == [0.0, 5.0, 20.0]
    assert any("peak keywords × coherence" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) >= 1 and at.dataframe
    assert len(at.text) >= 3  # sample completions at the chosen α
    assert res["points"][0].scores["coherence"] == 1.0


def test_bad_grids_get_messages(page):
    at = _sweep(page, "0, nan")
    assert at.error and "finite" in at.error[0].value
    at = _sweep(at, "0, ten")
    assert at.error and "numbers separated by commas" in at.error[0].value
    at.text_input(key="sw_grid").set_value("0, 5")
    at.text_input(key="sw_keywords").set_value(" , ")
    at = at.button(key="sw_go").click().run()
    assert at.error and "keyword list is empty" in at.error[0].value


def test_next_token_view(page):
    at = page.button(key="nt_go").click().run()
    assert not at.exception, at.exception
    cur, dc, made = at.session_state["nt_result"]
    assert len(cur.alphas) == 21 and cur.delta_p.shape[0] == 21
    assert len(at.get("plotly_chart")) >= 2
    # the curves say what made them: the prompt continued as text unless the template is chosen
    assert made["prompt"] == "I went to a" and made["chat template"] is False
    assert any("after 'I went to a'. Exact next-token probabilities" in c.value for c in at.caption)
    assert not at.warning
    # no token asked for and no movers: a sentence, not an empty chart
    at.text_input(key="nt_tokens").set_value(" , ")
    at.slider(key="nt_top").set_value(0)
    at = at.button(key="nt_go").click().run()
    assert any("No token to draw" in i.value for i in at.info)


def test_next_token_view_says_when_its_curves_are_stale_and_drops_them_on_an_error(page):
    """Audit: a new prompt left the old curves up with no word, and an error showed under them."""
    at = page.button(key="nt_go").click().run()
    at.text_input(key="nt_prompt").set_value("The weather today").run()
    assert any("prompt changed since" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) >= 2  # the old curves, said to be old
    at.text_input(key="nt_prompt").set_value("   ")
    at = at.button(key="nt_go").click().run()
    assert at.error and "prompt is empty" in at.error[0].value
    assert "nt_result" not in at.session_state and not at.get("plotly_chart")


def test_compare_methods_tab(page):
    page.text_input(key="sw_keywords").set_value("the, a")
    page.number_input(key="sw_samples").set_value(1)
    page.number_input(key="sw_tokens").set_value(4)
    page.text_input(key="cmp_features").set_value("1, 2")
    at = page.button(key="cmp_go").click().run()
    assert not at.exception, at.exception
    rows, curves = at.session_state["cmp_result"]
    assert {r.name for r in rows} == {"feature 1", "feature 2"} and set(curves) == {"feature 1", "feature 2"}
    at = at.button(key="cmp_go").click().run()  # the same comparison again: served from the sweep cache
    assert not at.exception
    page.text_input(key="cmp_features").set_value("")
    at = page.button(key="cmp_go").click().run()
    assert at.error and "at least one" in at.error[0].value


def test_unreachable_judge_warns_and_keeps_the_curves(page):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    page.text_input(key="judge_url").set_value(f"http://127.0.0.1:{port}/v1")
    at = _sweep(page.run(), "0, 5")
    assert not at.exception, at.exception
    assert at.warning and "cannot be reached" in at.warning[0].value
    pts = at.session_state["sw_result"]["points"]
    assert [p.alpha for p in pts] == [0.0, 5.0] and all("keywords" in p.scores for p in pts)


# -- prompting baselines and the Compare report (issue 19) --------------------------------------------------


def _hlines(chart) -> list[float]:
    """The y of every horizontal line (``fig.add_hline``) on a plotly chart element."""
    import json

    spec = json.loads(chart.proto.spec)
    return [s["y0"] for s in spec["layout"].get("shapes", []) if s.get("xref") == "x domain" and s["y0"] == s["y1"]]


def _compare_with_prompting(page, features: str = "1", instructions: str = "Always mention weddings.") -> AppTest:
    page.text_input(key="sw_keywords").set_value("the, a")
    page.number_input(key="sw_samples").set_value(1)
    page.number_input(key="sw_tokens").set_value(4)
    page.number_input(key="sw_seed").set_value(3)
    page.text_input(key="cmp_features").set_value(features)
    page.text_area(key="cmp_prompting").set_value(instructions)
    page.selectbox(key="cmp_placement").set_value("prefix")
    return page.button(key="cmp_go").click().run()


def test_a_prompting_entry_is_a_table_row_and_a_horizontal_line(page):
    import json

    from steering_core.measure.comparison import beats_phrase

    at = _compare_with_prompting(page, instructions="Always mention weddings.\n\nAlways mention weddings.\nBe brief.")
    assert not at.exception, at.exception
    rows, curves = at.session_state["cmp_result"]
    by = {r.name: r for r in rows}
    assert set(by) == {"feature 1", "prompt: Always mention weddings.", "prompt: Be brief."}  # a repeated line once
    assert by["prompt: Be brief."].kind == "prompt" and by["feature 1"].kind == "vector"
    table = at.dataframe[0].value
    assert list(table.columns[:4]) == ["name", "peak keywords × coherence", "±", "verdict"]
    assert list(table["verdict"]).count("prompting baseline") == 2
    by_name = table.set_index("name")
    assert by_name.loc["prompt: Be brief.", "α at peak"] == "—"  # a grey "None" before: a prompt has no α
    assert by_name.loc["feature 1", "α at peak"] == f"{feat_alpha(rows):.1f}"
    assert not table.isna().any().any()  # no cell is drawn as "None"
    best = max((r for r in rows if r.kind == "prompt"), key=lambda r: r.peak_product)
    assert f"against {best.name}" in table.columns  # how the feature stands against the best prompt
    feat = by["feature 1"]
    assert table.set_index("name").loc["feature 1", f"against {best.name}"] == beats_phrase(
        feat.peak_product, feat.peak_product_se, best.peak_product, best.peak_product_se)
    chart = at.get("plotly_chart")[-1]
    lines = _hlines(chart)
    want = [curves[n][0].get("product") for n in ("prompt: Always mention weddings.", "prompt: Be brief.")]
    notes = json.loads(chart.proto.spec)["layout"].get("annotations", [])
    spots = {(a.get("xanchor"), a.get("yanchor")) for a in notes if str(a.get("text", "")).startswith("prompt: ")}
    assert len(spots) == 2  # two baselines' labels sit in different corners (they overlapped at one height)
    assert sorted(lines) == pytest.approx(sorted(want))
    traces = [t.get("name") for t in json.loads(chart.proto.spec)["data"] if t.get("name")]
    assert traces == ["feature 1"]  # prompting entries are lines, not curves


def feat_alpha(rows) -> float:
    return next(r.alpha_at_peak for r in rows if r.name == "feature 1")


def test_the_compare_tab_names_its_task_says_when_it_is_stale_and_drops_it_on_an_error(page):
    """Audit: the table gave no word of the keywords it scored (the first tab's, auto-filled from
    another feature), stayed up under changed settings, and stayed under an error."""
    at = _compare_with_prompting(page)
    assert not at.exception, at.exception
    assert any("Task, from the first tab: keywords 'the, a', scored on 3 prompts × 1 sample of 4 tokens, seed 3"
               in c.value for c in at.caption)
    assert not any("other settings" in w.value for w in at.warning)
    at.text_input(key="sw_keywords").set_value("wedding").run()
    assert any("other settings (keywords changed since)" in w.value for w in at.warning)
    at.text_input(key="cmp_features").set_value("1, 99999")
    at = at.button(key="cmp_go").click().run()
    assert at.error and "cmp_result" not in at.session_state and "cmp_report" not in at.session_state
    assert not at.dataframe and not at.get("download_button")


def test_the_compare_report_zip_holds_csv_settings_and_png(page):
    import csv
    import io
    import zipfile

    from steering_core.measure.prompting import PromptEntry
    from steering_core.measure.report import CSV_NAME, PNG_NAME, SETTINGS_NAME, load_settings

    at = _compare_with_prompting(page)
    assert not at.exception, at.exception
    assert at.get("download_button"), "the Compare tab offers the report"
    rows, _ = at.session_state["cmp_result"]
    with zipfile.ZipFile(io.BytesIO(at.session_state["cmp_report"])) as z:
        assert sorted(z.namelist()) == sorted([CSV_NAME, SETTINGS_NAME, PNG_NAME])
        assert z.read(PNG_NAME).startswith(b"\x89PNG")
        table = list(csv.DictReader(io.StringIO(z.read(CSV_NAME).decode())))
        text = z.read(SETTINGS_NAME).decode()
    assert {r["name"] for r in table if r["peak"] == "1"} == {r.name for r in rows}
    s = load_settings(text)
    spec = s.task_spec()
    assert spec.prompts == ("I think", "Tell me about your weekend.", "Write a short story.")
    assert (spec.samples, spec.new_tokens, spec.seed, spec.keywords) == (1, 4, 3, ("the", "a"))
    assert s.prompting == (PromptEntry("prompt: Always mention weddings.", "Always mention weddings.", "prefix"),)
    # rerunning from the settings gives the same table
    from steering_core import load_model
    from steering_core.measure.comparison import Candidate, compare
    from steering_core.measure.report import vector_digest
    from steering_core.model.saes import load_sae

    model = load_model("tiny")
    sae = load_sae("tiny", model)
    (c,) = s.candidates
    assert (c.name, c.kind, c.feature, c.layer) == ("feature 1", "sae feature", 1, sae.layer)
    assert c.digest == vector_digest(sae.decoder_direction(1))
    assert s.multipliers[0] == 0.0 and s.multipliers[-1] == 3.0 and s.target_dce == 0.5
    assert s.model == model.name and s.precision == "fp32"
    again, _ = compare(model, [Candidate(c.name, sae.decoder_direction(c.feature), c.layer)], spec,
                       multipliers=s.multipliers, target_dce=s.target_dce, prompts=s.prompting)
    assert [(r.name, r.peak_product) for r in again] == [(r.name, r.peak_product) for r in rows]


def test_a_sweep_with_a_prompting_baseline_draws_it_as_lines(page):
    page.text_input(key="sw_prompting").set_value("Always mention weddings.")
    page.selectbox(key="sw_placement").set_value("prefix")
    at = _sweep(page, "0, 5")
    assert not at.exception, at.exception
    res = at.session_state["sw_result"]
    prompted = res["prompt"]
    assert prompted.entry.instruction == "Always mention weddings." and prompted.point.alpha == 0.0
    # scored against the unsteered rollouts of the same rows: the sweep's own α = 0 point
    assert prompted.baseline.get("loglik") == res["points"][0].get("loglik")
    lines = _hlines(at.get("plotly_chart")[0])
    assert lines == pytest.approx([prompted.point.get("product"), prompted.point.get("keywords")])
    assert any(c.value.startswith("Prompting baseline 'Always mention weddings.'") for c in at.caption)
