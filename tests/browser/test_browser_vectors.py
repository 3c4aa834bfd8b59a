"""Real browser on the tiny model and a tiny pack: the Vectors page's selectors never show a vector
that no longer exists."""

from __future__ import annotations

import torch
from browser_util import browser_page, choose, serve_app, tiny_pack_app, wait_idle

from steering_core.storage.library import open_library
from steering_core.vectors.vector import SteeringVector


def test_deleting_the_vector_both_selectors_show_moves_them_to_one_that_exists(tiny_pack_build, tmp_path):
    """Audit: after Delete in the Library, "What does it do?" still read the deleted name while its
    caption and lists described another vector."""
    env, cache = tiny_pack_app(tiny_pack_build, tmp_path)
    lib = open_library(cache / "library.duckdb")
    lib.vectors.save(SteeringVector("alpha-vec", 1, torch.linspace(-1, 1, 64), method="caa"))
    lib.vectors.save(SteeringVector("beta-vec", 1, torch.linspace(1, -1, 64) ** 3, method="pca_diff"))
    lib.close()
    with serve_app(env) as url, browser_page() as page:
        page.goto(url + "/vectors")
        main = page.get_by_test_id("stMain")
        main.get_by_role("tab", name="What does it do?").click()
        what = main.get_by_role("tabpanel", name="What does it do?")
        choose(what, "Vector", "beta-vec")
        what.get_by_text("pca_diff · block 1").wait_for()
        main.get_by_role("tab", name="Library").click()
        library = main.get_by_role("tabpanel", name="Library")
        choose(library, "Vector", "beta-vec")
        wait_idle(page)
        library.get_by_role("button", name="Delete").click()
        wait_idle(page)
        main.get_by_role("tab", name="What does it do?").click()
        what.get_by_text("caa · block 1").wait_for()
        assert what.get_by_role("combobox", name="Vector").input_value() == "alpha-vec"
        main.get_by_role("tab", name="Library").click()
        assert library.get_by_role("combobox", name="Vector").input_value() == "alpha-vec"
