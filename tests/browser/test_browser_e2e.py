"""End to end in a real browser, on the embedded default (SmolLM2-135M-Instruct + the shipped
feature pack): a person walks every page in order, each step building on the one before:

Datasets (load an example, save it) → Vectors (fit CAA from it, save; what does it do?) → Steer
(that vector, side by side) → Sweep (that vector over a tiny α grid; compare methods) → Features
(search, card with effects and actions; compare; map).

Every step is asserted on what a person sees and leaves a full-page screenshot in
test-artifacts/e2e-NN-<step>.png. The app runs on a temporary copy of the cache, so the
repository's cache/ is never written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from browser_util import ARTIFACTS, browser_page, choose, fill_number, go_to_page, screenshot_all, serve_app, wait_idle
from playwright.sync_api import expect

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
DATASET, VECTOR = "e2e-wedding", "e2e-caa"


def temp_cache(tmp_path: Path) -> Path:
    """A cache holding a copy of the shipped pack and, when the repository has a converted copy of
    the embedded model, links to its files (skips the ~25 s GGUF conversion). The model folder
    itself is a real folder of file links, so nothing the app does there (a rebuild, a removal)
    reaches the repository's cache/."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(ROOT / "cache" / "pack", cache / "pack")
    for model in (ROOT / "cache" / "models").glob("*/COMPLETE"):
        linked = cache / "models" / model.parent.name
        linked.mkdir(parents=True)
        for f in model.parent.iterdir():
            (linked / f.name).symlink_to(f.resolve())
    return cache


def grid_rows(grid) -> list[dict[str, str]]:
    """The rows a Streamlit dataframe shows, as {column: text}. The grid draws on a canvas; its
    accessible table (what a screen reader reads) holds the same cells as text, for the columns
    in view."""
    grid.locator("table tbody tr").first.wait_for(state="attached")
    return grid.locator("table").first.evaluate("""t => {
        const head = {};
        for (const th of t.tHead.rows[0].cells) head[th.getAttribute('aria-colindex')] = th.textContent.trim();
        return [...t.tBodies[0].rows].map(r => Object.fromEntries(
            [...r.cells].map(c => [head[c.getAttribute('aria-colindex')], c.textContent.trim()])));
    }""")


def keyed(scope, key: str):
    """The element drawn with Streamlit key ``key`` (Streamlit marks it with the class st-key-<key>)."""
    return scope.locator(f".st-key-{key}")


def test_walk_every_page_on_the_embedded_model(tmp_path):
    cache = temp_cache(tmp_path)
    # no STEERING_SAE: the embedded model must find the pack's SAE in the cache by itself
    env = {"STEERING_MODEL": "embedded", "STEERING_CACHE_DIR": str(cache)}
    shots = iter(range(100))

    with serve_app(env) as url, browser_page() as page:
        def shot(step: str) -> None:
            wait_idle(page)
            page.wait_for_timeout(800)  # let plotly finish drawing
            screenshot_all(page, ARTIFACTS / f"e2e-{next(shots):02d}-{step}.png")

        main, sidebar = page.get_by_test_id("stMain"), page.get_by_test_id("stSidebar")

        # -- Home: the embedded model, its SAE from the temporary cache, the pack -----------------------
        page.goto(url)
        main.get_by_role("heading", name="Steering workbench").wait_for()
        main.get_by_text("SmolLM2-135M-Instruct").first.wait_for()
        main.get_by_text(str(cache / "pack" / "sae")).first.wait_for()  # the SAE came from the temp cache
        main.get_by_role("heading", name="Feature pack").wait_for()
        shot("home")

        # -- 1. Datasets: open an example, save it under a new name -----------------------------------
        go_to_page(page, "Datasets")
        main.get_by_role("heading", name="Datasets").wait_for()
        choose(main, "Open", "example: wedding_vs_neutral")
        main.get_by_role("button", name="Load", exact=True).click()
        main.get_by_text("44 pairs · 35 train · 9 heldout").wait_for()
        editor = main.get_by_test_id("stDataFrame").first
        editor.get_by_text("We spent the whole weekend planning the wedding.").wait_for(state="attached")
        name = main.get_by_role("textbox", name="Name", exact=True)
        name.fill(DATASET)
        name.press("Enter")
        wait_idle(page)
        main.get_by_role("button", name="Save", exact=True).click()
        main.get_by_text(f"Saved {DATASET} (44 pairs).").wait_for()
        # the saved list, the Open choices and the delete button include it at once
        main.get_by_role("heading", name="Saved datasets").wait_for()
        main.get_by_role("button", name=f"Delete saved dataset {DATASET}").wait_for()
        saved_table = main.get_by_test_id("stDataFrame").last
        saved_table.get_by_text(DATASET, exact=True).wait_for(state="attached")
        shot("datasets-saved")

        # -- 2. Vectors, Fit: CAA from the saved dataset at the default block, saved -------------------
        go_to_page(page, "Vectors")
        main.get_by_role("heading", name="Vectors").wait_for()
        choose(main, "Dataset", f"saved: {DATASET}")
        assert main.get_by_role("spinbutton", name="Layer (output of block)").input_value() == "15"  # the SAE's block
        assert main.get_by_role("combobox", name="Method").input_value().startswith("CAA")
        save_as = main.get_by_role("textbox", name="Save as")
        save_as.fill(VECTOR)
        save_as.press("Enter")
        wait_idle(page)
        main.get_by_role("button", name="Fit and save").click()
        fitted = main.get_by_test_id("stAlertContentSuccess").filter(has_text=f"Saved {VECTOR}")
        fitted.wait_for()
        assert re.search(r"CAA.*block 15, norm \d", fitted.inner_text())
        shot("vectors-fit")

        # -- 3. Vectors, What does it do?: cosine-similar and predicted features -----------------------
        main.get_by_role("tab", name="What does it do?").click()
        what = main.get_by_role("tabpanel", name="What does it do?")
        choose(what, "Vector", VECTOR)
        what.get_by_text("caa · block 15").first.wait_for()
        what.get_by_text(f"dataset {DATASET}").first.wait_for()
        what.get_by_text("Cosine-similar features").wait_for()
        what.get_by_text("Predicted effects").wait_for()
        what.get_by_text("Predicted by the effect approximator, not measured.").wait_for()
        shot("vectors-what")
        cosine, predicted = grid_rows(keyed(what, "what_cos")), grid_rows(keyed(what, "what_pred"))
        for rows in (cosine, predicted):  # ranked lists: feature id, value, label
            assert len(rows) >= 5, rows
            assert all(r["feature"].isdigit() and r["label"] for r in rows), rows[:3]
        cos_values = [float(r["value"]) for r in cosine]
        assert cos_values == sorted(cos_values, reverse=True) and cos_values[0] > 0  # most similar first
        assert any(abs(float(r["value"])) > 0 for r in predicted)

        # -- 4. Steer: the saved vector, greedy, a few tokens; steered vs unsteered ---------------------
        go_to_page(page, "Steer")
        main.get_by_role("heading", name="Steer", exact=True).wait_for()
        sidebar.get_by_text("Saved vector (Vectors page)").click()
        choose(sidebar, "Vector", VECTOR)
        sidebar.get_by_text(f"saved vector {VECTOR} (caa, block 15)").wait_for()
        fill_number(main, "Max new tokens", 12)
        fill_number(main, "Temperature (0 = greedy)", 0)
        wait_idle(page)
        main.get_by_role("button", name="Generate").click()
        main.get_by_text("Finished:").wait_for()
        main.get_by_role("heading", name="Unsteered").wait_for()
        steered_head = main.get_by_role("heading", name=re.compile(r"Steered \(α = \+\d+\.\d, layer 15\)"))
        steered_head.wait_for()
        unsteered = [t.inner_text() for t in main.get_by_test_id("stAlertContentInfo").all()]
        steered = [t.inner_text() for t in main.get_by_test_id("stAlertContentSuccess").all()]
        assert len(unsteered) == len(steered) == 2
        assert all(t.strip() and t != "…" for t in unsteered + steered)
        assert unsteered[0] == unsteered[1]  # greedy: both samples of a side agree
        assert steered[0] != unsteered[0]  # the vector changed the text
        shot("steer")

        # -- 5. Sweep, Behaviour × coherence: tiny manual grid, one prompt, one sample -----------------
        go_to_page(page, "Sweep")
        main.get_by_role("heading", name="Sweep α").wait_for()
        sidebar.get_by_text("Saved vector", exact=True).click()
        choose(sidebar, "Vector", VECTOR)
        sidebar.get_by_text("Unit direction at block 15").wait_for()
        sweep = main.get_by_role("tabpanel", name="Behaviour × coherence")
        sweep.get_by_role("textbox", name="Prompts, one per line").fill("Tell me about your weekend.")
        sweep.get_by_text("Manual", exact=True).click()
        grid_box = sweep.get_by_role("textbox", name="Manual grid (comma-separated)")
        expect(grid_box).to_be_enabled()  # the manual grid opens once "Manual" is chosen
        grid_box.fill("0, 60, 120")
        grid_box.press("Enter")
        fill_number(sweep, "Samples per prompt and α", 2)  # one would leave every ± unknown
        fill_number(sweep, "Tokens per rollout", 8)
        kw = sweep.get_by_role("textbox", name="Keywords (comma-separated)")
        kw.fill("wedding, bride, married")
        kw.press("Enter")
        wait_idle(page)
        sweep.get_by_role("button", name="Run sweep").click()
        sweep.locator(".js-plotly-plot").first.wait_for()
        sweep.get_by_text(re.compile(rf"{VECTOR}: peak keywords × coherence = [\d.]+ ± [\d.]+ at α = ")).wait_for()
        table = grid_rows(sweep.get_by_test_id("stDataFrame").first)
        assert [float(r["alpha"]) for r in table] == [0.0, 60.0, 120.0], table
        assert float(table[0]["coherence"]) == 1.0  # unsteered text is perfectly coherent by definition
        assert all(0.0 <= float(r["keywords"]) <= 1.0 for r in table), table
        legend = sweep.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert {"keywords", "coherence", "product"} <= set(legend), legend
        sweep.get_by_text("Samples at α").wait_for()  # and the completions at the chosen α
        assert sweep.get_by_test_id("stText").first.inner_text().strip()
        shot("sweep")

        # -- 5b. Sweep, Compare methods: the same tiny task over the saved vector ----------------------
        main.get_by_role("tab", name="Compare methods").click()
        cmp_tab = main.get_by_role("tabpanel", name="Compare methods")
        cmp_tab.get_by_role("combobox", name="Saved vectors").click()
        page.get_by_role("option", name=VECTOR, exact=True).click()
        page.keyboard.press("Escape")
        wait_idle(page)
        cmp_tab.get_by_role("button", name="Compare", exact=True).click()
        cmp_tab.locator(".js-plotly-plot").first.wait_for()
        rows = grid_rows(cmp_tab.get_by_test_id("stDataFrame").first)
        assert len(rows) == 1 and rows[0]["name"] == VECTOR, rows
        assert rows[0]["verdict"] == "useful α" or rows[0]["verdict"].startswith("no useful α ("), rows
        assert float(rows[0]["automatic α"]) > 0, rows
        assert "Task, from the first tab: keywords" in cmp_tab.inner_text()
        shot("sweep-compare-methods")

        # -- 6. Features: search by label text, open a card, see its effects and actions ---------------
        go_to_page(page, "Features")
        main.get_by_role("heading", name="Features", exact=True).wait_for()
        search = main.get_by_role("tabpanel", name="Search")
        search.get_by_text("Label text", exact=True).click()
        query = search.get_by_role("textbox", name="Query")
        query.fill("wedding")
        query.press("Enter")
        results = search.get_by_test_id("stDataFrame").first
        hits = grid_rows(results)
        assert hits and all("wedding" in h["label"].lower() for h in hits), hits
        first_id = int(hits[0]["feature"])
        results.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        box = results.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 35 + 17)  # the first data row (a canvas grid: by position)
        card_head = search.get_by_role("heading", name=re.compile(rf"#{first_id} · .*wedding"))
        card_head.wait_for()
        for title in ("Effects", "Actions", "Cosine-similar", "Effect-similar"):
            search.get_by_text(title, exact=True).wait_for()
        search.get_by_text("Loss-matched α").wait_for()
        search.get_by_text(re.compile(r"Top activating snippets \(\d+\)")).wait_for()
        effects = grid_rows(keyed(search, f"card_{first_id}_effects"))
        actions = grid_rows(keyed(search, f"card_{first_id}_actions"))
        assert len(effects) >= 5 and len(actions) >= 5, (effects, actions)
        # feature ids and values (the card's four narrow lists scroll their labels out of view)
        assert all(r["feature"].isdigit() and float(r["value"]) != 0 for r in effects + actions), (effects, actions)
        shot("features-card")

        # -- 7. Features, Compare: cosine vs effect neighbourhoods of that feature ---------------------
        main.get_by_role("tab", name="Compare").click()
        cmp = main.get_by_role("tabpanel", name="Compare")
        feature_box = cmp.get_by_role("textbox", name="Feature")
        expect(feature_box).to_have_value(str(first_id))  # it follows the card just opened
        by_effect = cmp.get_by_test_id("stColumn").filter(has_text="By effect similarity")
        by_cosine = cmp.get_by_test_id("stColumn").filter(has_text="By cosine similarity")
        for group in (by_effect, by_cosine):  # both groups grow from the chosen feature (step 0)
            step0_feature = group.locator("tbody tr").first.locator("td[aria-colindex='2']")
            expect(step0_feature).to_have_text(str(first_id), timeout=60_000)
        cmp.get_by_text("Jaccard overlap of the cosine and effect neighbourhoods").wait_for()
        jaccard = float(cmp.get_by_test_id("stMetricValue").first.inner_text())
        assert 0.0 <= jaccard <= 1.0
        cmp.locator(".js-plotly-plot").first.wait_for()  # the Venn diagram
        for title in ("Cosine only", "Both", "Effect only", "By effect similarity", "By cosine similarity"):
            cmp.get_by_text(title, exact=True).wait_for()
        cmp.get_by_role("heading", name=re.compile("Growing groups")).wait_for()
        cmp.get_by_text(re.compile(r"Jaccard of the two groups: [\d.]+ · \d+ features? in both")).wait_for()
        groups = grid_rows(by_effect)
        assert (groups[0]["step"], groups[0]["feature"]) == ("0", str(first_id)) and "wedding" in groups[0]["label"]
        assert len(groups) == 12  # the default group size
        shot("features-compare")

        # -- 8. Features, Map: the UMAP scatter, the opened feature starred ----------------------------
        main.get_by_role("tab", name="Map").click()
        fmap = main.get_by_role("tabpanel", name="Map")
        plot = fmap.locator(".js-plotly-plot").first
        plot.wait_for()
        fmap.get_by_text("Click or lasso points to open their cards").wait_for()
        legend = plot.locator(".legendtext")
        legend.filter(has_text=f"#{first_id}").wait_for()  # the focused feature's star
        assert {"features", "effect neighbours", "cosine neighbours"} <= set(legend.all_text_contents())
        assert plot.locator("canvas").count() >= 1  # the WebGL scatter of every feature was drawn
        shot("features-map")
