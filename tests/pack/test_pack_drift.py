"""A config edited after stages are done (steering_core/pack/drift.py): a change to anything a done
stage read is refused with the redo that applies it; where the build runs or ships is free."""

from __future__ import annotations

import json
import shutil

import pytest
from packs_util import write_config

from steering_core.pack.builder import Builder
from steering_core.pack.config import PackConfig, PackConfigError, load_config
from steering_core.pack.drift import drift, drift_message
from steering_core.pack.pipeline import PIPELINE
from steering_core.storage.db import connect

DONE_TO_EFFECTS = ["corpus", "activations", "sae", "sae_eval", "stats", "control", "effects"]


def _cfg(**kw) -> dict:
    return json.loads(json.dumps(PackConfig(name="x", **kw).to_dict()))


def test_a_config_stored_before_a_setting_existed_reads_as_the_old_behaviour():
    """alpha.refine came after packs were built with none: a stored config without it is a build
    with refine = 0, so only a config asking for refinement differs from it."""
    old = _cfg()
    del old["alpha"]["refine"]
    as_built, refined = _cfg(), _cfg()
    as_built["alpha"]["refine"] = 0
    assert drift(old, as_built, DONE_TO_EFFECTS) == []
    assert drift(old, refined, DONE_TO_EFFECTS) == [("alpha", ["alpha.refine 0 → 4"], ["control", "effects"])]


def test_changes_to_what_done_stages_read_are_found():
    old = _cfg()
    new = _cfg()
    new["effects"]["rollouts_per_prompt"] = 32
    found = drift(old, new, DONE_TO_EFFECTS)
    assert found == [("effects", ["effects.rollouts_per_prompt 16 → 32"], ["control", "effects"])]
    msg = drift_message(found, PIPELINE.order())
    assert "effects.rollouts_per_prompt 16 → 32" in msg and "redo CONFIG control effects`" in msg
    # a stage not done yet may read anything; where it runs and ships never matters
    later = _cfg(neighbors=8, ship_to="elsewhere", out_dir="/tmp/x")
    later["topup"]["rollouts_per_prompt"] = 32
    assert drift(old, later, DONE_TO_EFFECTS) == []
    # the model or seed: every done stage
    assert drift(old, _cfg(seed=3), ["corpus", "sae"])[0][2] == ["corpus", "sae"]


def test_a_build_refuses_a_config_edited_under_its_done_stages(tiny_pack_build, tmp_path):
    shutil.copytree(tiny_pack_build / "build", tmp_path / "build")
    cfg = write_config(tmp_path)
    before = dict(connect(tmp_path / "build" / "build.duckdb", read_only=True).execute(
        "SELECT key, value FROM meta").fetchall())["config"]
    cfg.write_text(cfg.read_text().replace("new_tokens = 4", "new_tokens = 6"))
    b = Builder(load_config(cfg), show_bar=False)
    try:
        with pytest.raises(PackConfigError, match="effects.new_tokens 4 → 6.*redo CONFIG control effects topup "
                                                  "stability reference neighbors approximator maps outputs labels ship`"):
            b.run()
    finally:
        b.close()
    con = connect(tmp_path / "build" / "build.duckdb", read_only=True)
    assert dict(con.execute("SELECT key, value FROM meta").fetchall())["config"] == before  # nothing written
    con.close()
    # shipping somewhere else is not a change to what was built
    cfg.write_text(cfg.read_text().replace("new_tokens = 6", "new_tokens = 4").replace(
        str(tmp_path / "pack"), str(tmp_path / "pack2")))
    b = Builder(load_config(cfg), show_bar=False)
    try:
        b.run()
    finally:
        b.close()


def test_following_the_advice_rebuilds_everything_on_the_new_settings(tiny_pack_build, tmp_path):
    """Library audit: the advised redo stopped at `outputs`, so neighbours, approximator, maps,
    labels and the shipped pack kept the old effects, and the twin rows were kept from 4-token
    rollouts (or, with more rollouts, the build was stuck on 'The baseline has 6 rows')."""
    import re

    shutil.copytree(tiny_pack_build / "build", tmp_path / "build")
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("new_tokens = 4", "new_tokens = 6").replace(
        "rollouts_per_prompt = 2\nbaseline_rollouts_per_prompt = 2",
        "rollouts_per_prompt = 3\nbaseline_rollouts_per_prompt = 3"))
    b = Builder(load_config(cfg), show_bar=False)
    try:
        with pytest.raises(PackConfigError) as info:
            b.run()
        stages = re.search(r"redo CONFIG ([a-z_ ]+)`", str(info.value)).group(1).split()
        assert stages == ["control", "effects", "topup", "stability", "reference", "neighbors", "approximator",
                          "maps", "outputs", "labels", "ship"], stages
        b.redo(*stages)
        b.run()
    finally:
        b.close()
    made = json.loads((tmp_path / "build" / "baseline_rows.json").read_text())
    assert made["spec"]["new_tokens"] == 6 and made["spec"]["baseline_rollouts_per_prompt"] == 3
    con = connect(tmp_path / "pack" / "pack.duckdb", read_only=True)
    try:
        shipped = json.loads(dict(con.execute("SELECT key, value FROM meta").fetchall())["config"])
    finally:
        con.close()
    assert shipped["effects"]["new_tokens"] == 6 and shipped["effects"]["rollouts_per_prompt"] == 3


def test_redo_without_a_build_says_so_and_writes_nothing(tmp_path):
    from packs_util import run_cli

    cfg = write_config(tmp_path)
    res = run_cli(["redo", str(cfg), "effects"])
    assert res.returncode == 2 and "There is no build in" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "build").exists()
