"""The Compare report (measure.report): CSV of every point with the peaks marked, settings JSON that
reads back equal and rebuilds the task, a PNG, and the three in one zip."""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile

import pytest
import torch

from steering_core.measure.comparison import ComparisonRow
from steering_core.measure.prompting import PromptEntry
from steering_core.measure.report import (
    CSV_NAME,
    PNG_NAME,
    SETTINGS_NAME,
    CandidateSource,
    ReportError,
    compare_settings,
    feature_source,
    load_settings,
    make_report,
    markdown_table,
    report_csv,
    report_zip,
    saved_vector_source,
    settings_json,
    vector_digest,
)
from steering_core.measure.sweep import AlphaPoint, SweepSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def point(alpha: float, kw: float, coh: float) -> AlphaPoint:
    return AlphaPoint(alpha, {"keywords": kw, "keywords_se": 0.1, "coherence": coh, "product": kw * coh,
                              "product_se": 0.05, "loglik": -2.0 - alpha / 100})


def comparison():
    """Two vectors and a prompting entry, as compare() returns them (rows best first)."""
    curves = {
        "caa": [point(0.0, 0.0, 1.0), point(20.0, 0.5, 0.8), point(40.0, 0.75, 0.4)],
        "feature 630": [point(0.0, 0.0, 1.0), point(30.0, 0.25, 0.9), point(60.0, 0.5, 0.3)],
        "prompt: Always mention weddings.": [point(0.0, 0.9, 0.7)],
    }
    rows = [
        ComparisonRow("prompt: Always mention weddings.", None, math.nan, 0.63, math.nan, 0.9, 0.7, kind="prompt",
                      instruction="Always mention weddings."),
        ComparisonRow("caa", 15, 40.0, 0.4, 20.0, 0.5, 0.8),
        ComparisonRow("feature 630", 15, 30.0, 0.225, 30.0, 0.25, 0.9),
    ]
    return rows, curves


def settings():
    task = SweepSpec(prompts=("I think", "Write a short story."), alphas=(0.0,), samples=3, new_tokens=16, seed=7,
                     keywords=("wedding", "bride"))
    # recorded as compare() runs it: empty prompts dropped, keywords stripped
    raw = SweepSpec(prompts=("I think", "  ", "Write a short story."), alphas=(0.0, 5.0), samples=3, new_tokens=16,
                    seed=7, keywords=("wedding", " bride "))
    cands = [CandidateSource("caa", 15, "saved vector", "caa", "caa", "wedding_vs_neutral", "diff", None, "add",
                             "0123456789abcdef"),
             CandidateSource("feature 630", 15, "sae feature", "cache/pack/sae", feature=630)]
    entries = [PromptEntry("prompt: Always mention weddings.", "Always mention weddings.", "system")]
    return compare_settings(raw, cands, entries, (0.0, 0.5, 1.0, 2.0), 0.5, "SmolLM2-135M-Instruct", "bf16",
                            "cache/pack/sae"), task


def test_csv_has_every_point_and_marks_each_entrys_peak():
    rows, curves = comparison()
    got = list(csv.DictReader(io.StringIO(report_csv(rows, curves))))
    assert len(got) == 7
    assert [r["name"] for r in got][:1] == ["prompt: Always mention weddings."]  # the table's order
    peaks = {r["name"]: float(r["alpha"]) for r in got if r["peak"] == "1"}
    assert peaks == {"caa": 20.0, "feature 630": 30.0, "prompt: Always mention weddings.": 0.0}
    prompt = next(r for r in got if r["kind"] == "prompt")
    assert prompt["layer"] == "" and prompt["auto_alpha"] == "" and prompt["multiplier"] == ""
    assert prompt["instruction"] == "Always mention weddings." and float(prompt["product"]) == pytest.approx(0.63)
    caa = [r for r in got if r["name"] == "caa"]
    assert [float(r["multiplier"]) for r in caa] == [0.0, 0.5, 1.0]
    assert {"keywords", "keywords_se", "coherence", "product", "product_se", "loglik"} <= set(got[0])


def test_settings_json_round_trips_and_rebuilds_the_task():
    s, task = settings()
    text = settings_json(s)
    back = load_settings(text)
    assert back == s
    assert load_settings(settings_json(back)) == back
    assert back.task_spec() == task
    d = json.loads(text)
    assert d["task"]["prompts"] == ["I think", "Write a short story."] and "alphas" not in d["task"]
    assert d["task"]["samples"] == 3 and d["task"]["new_tokens"] == 16 and d["task"]["seed"] == 7
    assert d["task"]["keywords"] == ["wedding", "bride"]
    assert d["candidates"][0]["dataset"] == "wedding_vs_neutral" and d["candidates"][1]["feature"] == 630
    assert d["prompting"] == [{"name": "prompt: Always mention weddings.", "instruction": "Always mention weddings.",
                               "placement": "system"}]
    assert d["multipliers"] == [0.0, 0.5, 1.0, 2.0] and d["model"] == "SmolLM2-135M-Instruct"
    assert d["precision"] == "bf16"


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ('{"version": 99}', "version-1"),
                                           ('{"version": 1, "task": {}, "colour": 3}', "unexpected field")])
def test_bad_settings_get_a_sentence(text, message):
    with pytest.raises(ReportError, match=message):
        load_settings(text)


def test_zip_holds_the_csv_the_settings_and_a_png():
    rows, curves = comparison()
    s, _ = settings()
    report = make_report(rows, curves, s, title="wedding")
    assert report.png.startswith(PNG_MAGIC) and len(report.png) > 5000
    data = report_zip(report)
    assert data == report_zip(make_report(rows, curves, s, title="wedding"))  # the same report, the same bytes
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == sorted([CSV_NAME, SETTINGS_NAME, PNG_NAME])
        assert z.read(CSV_NAME).decode() == report.csv
        assert load_settings(z.read(SETTINGS_NAME)) == s
        assert z.read(PNG_NAME).startswith(PNG_MAGIC)


def test_a_report_needs_rows_with_curves():
    rows, curves = comparison()
    s, _ = settings()
    with pytest.raises(ReportError, match="no rows"):
        make_report([], curves, s)
    with pytest.raises(ReportError, match="No curve for caa"):
        make_report(rows, {k: v for k, v in curves.items() if k != "caa"}, s)


def test_markdown_table_has_a_row_per_entry_with_its_alpha():
    rows, _ = comparison()
    md = markdown_table(rows).splitlines()
    assert len(md) == 5 and md[0].startswith("| entry | kind | peak keywords × coherence")
    assert "| caa | vector | 0.40 | 20.0 (0.5×) | 40.0 | 0.50 | 0.80 |" in md
    assert "| prompt: Always mention weddings. | prompt | 0.63 | — (prompt) | — | 0.90 | 0.70 |" in md


def test_candidate_sources_carry_a_digest_of_the_vector():
    from steering_core.vectors import SteeringVector

    v = torch.arange(8, dtype=torch.float32)
    assert vector_digest(v) == vector_digest(v.clone().double()) != vector_digest(v + 1)
    vec = SteeringVector("w", 3, v, method="caa", dataset="wedding_vs_neutral", meta={"position": "diff"})
    src = saved_vector_source(vec)
    assert (src.name, src.layer, src.kind, src.method, src.dataset, src.position, src.operator) == (
        "w", 3, "saved vector", "caa", "wedding_vs_neutral", "diff", "add")
    assert src.digest == vector_digest(v)
    f = feature_source(630, 15, "cache/pack/sae", v)
    assert f.name == "feature 630" and f.feature == 630 and f.digest == vector_digest(v)
