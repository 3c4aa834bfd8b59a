"""bench.sae_fit measures the build's SAE as the pack's sae_eval stage did: its held-out figures are
the pack's own meta values, and every other set of windows gets both EVs with their SEs."""

from __future__ import annotations

import json

import pytest
from packs_util import write_config  # noqa: E402

from bench.sae_fit import main
from steering_core.pack.tables import get_meta
from steering_core.storage.db import connect


def test_held_out_figures_equal_the_packs_and_draws_carry_ses(tiny_pack_build, capsys):
    main(["--config", str(write_config(tiny_pack_build)), "--draws", "1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    con = connect(tiny_pack_build / "pack" / "pack.duckdb", read_only=True)
    meta = get_meta(con)
    con.close()
    got = {(r["metric"], r["windows"]): r for r in rows}
    assert {w for _, w in got} == {"held-out", "all", "random draw 1"}
    held = got["sae_ev_all_tokens", "held-out"]
    assert held["value"] == pytest.approx(float(meta["sae_explained_variance"]), abs=1e-4)
    assert held["se"] == pytest.approx(float(meta["sae_explained_variance_se"]), abs=1e-4)
    assert got["sae_ev_typical", "held-out"]["value"] == pytest.approx(
        float(meta["sae_explained_variance_typical"]), abs=1e-4)
    assert got["sae_delta_ce", "held-out"]["value"] == pytest.approx(float(meta["sae_delta_ce"]), abs=1e-4)
    assert all(r["unit"] in ("share", "nats") and r["se"] >= 0 for r in rows)
    assert got["sae_ev_all_tokens", "all"]["tokens"] > held["tokens"]
