"""bench.pack_reliability reads a pack's reliability figures from its own meta table."""

from __future__ import annotations

import json

from bench.pack_reliability import figures, main
from steering_core.pack.tables import get_meta
from steering_core.storage.db import connect


def test_figures_are_the_packs_own_meta_values(tiny_pack_build, capsys):
    pack = tiny_pack_build / "pack"
    con = connect(pack / "pack.duckdb", read_only=True)
    meta = get_meta(con)
    live = con.execute("SELECT count(*) FROM features WHERE live").fetchone()[0]
    con.close()
    got = {m: v for m, v, _ in figures(pack)}
    for key in ("reference_top10_overlap_median", "specific_reference_top10_overlap_median",
                "stability_median_top10_overlap", "self_in_top10_share", "approximator_r2_heldout"):
        assert got[key] == float(json.loads(meta[key])), key
    assert got["live_features"] == live
    assert got["live_features_without_label_or_description"] == 0  # every live feature is described
    assert 0 <= got["steers_well_share"] <= 1
    assert main([str(pack)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["metric"] for r in lines} == set(got) and all({"metric", "value", "unit"} <= set(r) for r in lines)


def test_a_folder_without_a_pack_is_one_sentence(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no pack.duckdb" in capsys.readouterr().err
