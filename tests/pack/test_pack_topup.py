"""The pack's ``topup`` stage (steering_core/pack/topup.py): contested features get more rollouts,
pooled into exactly the larger budget's effect; a build killed mid-top-up resumes to identical
tables, carried top-up chunks are pooled as saved, and bad settings are refused before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from packs_util import assert_same_build, run_cli, write_config
from test_pack import tables

from steering_core.measure.effects import EffectSpec, measure_effects
from steering_core.pack.carry import segments, to_stored
from steering_core.pack.config import PackConfigError, load_config
from steering_core.storage.db import connect

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)

OVER = 27  # of the tiny SAE's 40 targets; about half the features have more contested targets
LATER = ("topup", "stability", "reference", "neighbors", "approximator", "maps", "outputs", "labels", "ship")


def topup_config(tmp: Path, progress: Path | None = None, rollouts: int = 4, baseline: int = 4) -> Path:
    """The tiny config at 2 rollouts per prompt, topped up to ``rollouts`` (twins for ``baseline``)."""
    over = {"progress": str(progress), "progress_every": 1} if progress else {}
    path = write_config(tmp, stability_features=12, **over)
    text = path.read_text().replace("baseline_rollouts_per_prompt = 2", f"baseline_rollouts_per_prompt = {baseline}")
    path.write_text(text + f"[topup]\nrollouts_per_prompt = {rollouts}\ncontested_over = {OVER}\n")
    return path


@pytest.fixture(scope="module")
def topup_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("topup")
    res = run_cli(["build", str(topup_config(tmp, tmp / "progress")), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp


def rewind(src: Path, tmp: Path) -> Path:
    """A copy of ``src``'s build as it stood when the effects stage had just finished: the first-pass
    rows back in the matrices, the top-up's files and records gone, the later stages not done."""
    shutil.copytree(src / "build", tmp / "build")
    b = tmp / "build"
    with np.load(b / "topup_first.npz") as z:
        ids, first, first_se = z["ids"], z["effect"], z["se"]
    for name, rows in (("effects.npy", first), ("effects_se.npy", first_se)):
        m = np.load(b / name, mmap_mode="r+")
        m[ids] = rows
        m.flush()
        del m
    for name in ("topup_first.npz", "topup_extra.npy", "topup_extra_se.npy", "topup_seconds.json"):
        (b / name).unlink()
    con = connect(b / "build.duckdb")
    con.execute("DELETE FROM topup_chunks")
    con.execute("DELETE FROM stages WHERE stage IN (SELECT unnest(?))", [list(LATER)])
    con.close()
    return topup_config(tmp)


def _meta(db: Path) -> dict:
    con = connect(db, read_only=True)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


def test_contested_features_are_measured_on_the_larger_budget(topup_build):
    from steering_core.model.loading import load_model
    from steering_core.model.saes import load_sae_from_disk
    from steering_core.pack.distributed.work import unit_rows

    b = topup_build / "build"
    with np.load(b / "topup_first.npz") as z:
        ids, contested = z["ids"].tolist(), z["contested"]
    assert ids == np.nonzero(contested > OVER)[0].tolist()
    assert 0 < len(ids) < len(contested)  # some features topped up, some not
    meta = _meta(topup_build / "pack" / "pack.duckdb")
    assert json.loads(meta["effects_topped_up"]) == ids
    assert float(meta["effects_mean_rollouts"]) == pytest.approx(3 * (2 + 2 * len(ids) / 40), abs=0.05)
    assert meta["effects_topup_rollouts"] == "12"
    assert json.loads(meta["effects_topup"])["contested_over_effective"] == OVER  # no share cap in this config

    # the stored rows equal one measurement on rollouts 0–3 (topped up) or 0–1 (the others)
    model = load_model("tiny", precision="fp32")
    sae = load_sae_from_disk(b / "sae", model)
    con = connect(b / "build.duckdb", read_only=True)
    alpha = dict(con.execute("SELECT feature_id, alpha FROM features").fetchall())
    con.close()
    cfg = load_config(topup_build / "tiny.toml")
    rows = __import__("torch").from_numpy(np.load(b / "baseline_rows.npy"))
    eff, se = np.load(b / "effects.npy"), np.load(b / "effects_se.npy")
    others = [f for f in range(40) if f not in ids]
    for fids, r in ((ids[:3], 4), (others[:3], 2)):
        spec = EffectSpec(**{**cfg.effects.to_dict(), "rollouts_per_prompt": r})
        est = measure_effects(model, sae, 1, unit_rows(sae, fids), [alpha[f] for f in fids], spec, rows, seed=0)
        np.testing.assert_allclose(eff[fids], to_stored(est.effect.numpy(), "e"), rtol=2e-3, atol=2e-4)
        assert np.median(se[fids] / np.maximum(est.se.numpy(), 1e-9)) == pytest.approx(1, abs=0.5)

    # the stability stage re-measures each sampled feature on the budget the pack gave it
    from steering_core.pack import tables as build_tables

    con = connect(b / "build.duckdb", read_only=True)
    sparse = build_tables.measured_sparse_features(con, cfg.dense_threshold)
    con.close()
    pick = sorted(np.random.default_rng(cfg.seed + 7).choice(len(sparse), size=12, replace=False).tolist())
    sample = [sparse[i][0] for i in pick]
    n_big = sum(f in ids for f in sample)
    assert 0 < n_big < 12
    starts = [ln.split()[-1] for ln in (b / "build.log").read_text().splitlines() if "[stability] start" in ln]
    assert starts == [f"0/{12 - n_big}", f"0/{n_big}"]

    # the shipped lists are the pooled rows: values, SEs and ranks by magnitude
    con = connect(topup_build / "pack" / "pack.duckdb", read_only=True)
    f = ids[0]
    got = con.execute("SELECT target_feature, effect, effect_se FROM feature_effects WHERE source_feature = ? "
                      "AND rank IS NOT NULL ORDER BY rank", [f]).fetchall()
    con.close()
    assert [t for t, _, _ in got] == np.argsort(-np.abs(eff[f]), kind="stable")[:8].tolist()
    for t, e, s in got:
        assert (e, s) == (pytest.approx(float(eff[f, t]), abs=1e-6), pytest.approx(float(se[f, t]), abs=1e-6))


def test_kill_mid_topup_resumes_to_identical_tables(topup_build, tmp_path):
    """Killed after chunk 1's pooled rows reached effects.npy but before its commit: the resumed
    build pools chunk 1 again from the snapshot (not from the already pooled rows)."""
    point = "topup:1:before_commit"
    cfg = rewind(topup_build, tmp_path)
    res = run_cli(["build", str(cfg), "--quiet"], {"STEERING_PACK_CRASH_AT": point})
    assert res.returncode == -9, (res.returncode, res.stderr[-2000:])
    con = connect(tmp_path / "build" / "build.duckdb", read_only=True)
    assert con.execute("SELECT count(*) FROM topup_chunks").fetchone()[0] == 1
    con.close()
    # another rule or the top-up turned off, half-way: refused with a sentence, nothing changed
    from steering_core.pack.builder import Builder

    original = cfg.read_text()
    for text, says in ((original.replace("contested_over = 27", "contested_over = 20"), "was started with"),
                       (original.replace("[topup]\nrollouts_per_prompt = 4", "[topup]\nrollouts_per_prompt = 0"),
                        "turns the top-up off")):
        cfg.write_text(text)
        b = Builder(load_config(cfg), show_bar=False)
        try:
            with pytest.raises(PackConfigError, match=says) as err:
                b.run()
            assert "redo CONFIG topup" in str(err.value)
        finally:
            b.close()
    cfg.write_text(original)
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_build(topup_build / "build", tmp_path / "build")
    a, b = tables(topup_build / "pack" / "pack.duckdb"), tables(tmp_path / "pack" / "pack.duckdb")
    for key in ("features", "effects", "neighbors", "meta"):
        assert a[key] == b[key], key


def test_a_topup_moved_to_an_empty_work_folder_pools_carried_chunks_as_saved(topup_build, tmp_path):
    """Only the progress folder is left, with a value planted in the first top-up segment and the
    last segment lost: the new machine restores the effects, chooses the same features, pools the
    carried chunks as saved (the planted value shows) and measures the lost one to the same values."""
    progress = tmp_path / "progress"
    shutil.copytree(topup_build / "progress", progress)
    segs = segments(progress, "topup")
    assert [s.chunks for s in segs] == [[c] for c in range(len(segs))] and len(segs) >= 2
    with np.load(segs[0].path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["effect"][0, 3] = 1234.0  # the first topped-up feature's extra rollouts, target 3
    np.savez_compressed(segs[0].path, **arrays)
    segs[-1].path.unlink()
    res = run_cli(["build", str(topup_config(tmp_path, progress)), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    b, ref = tmp_path / "build", topup_build / "build"
    assert "measuring the unsteered baseline (baseline_rows)" not in (b / "build.log").read_text()
    assert f"[top-up] start {len(segs) - 1}/{len(segs)}" in (b / "build.log").read_text()
    with np.load(b / "topup_first.npz") as z, np.load(ref / "topup_first.npz") as zr:
        ids, first = z["ids"], z["effect"]
        np.testing.assert_array_equal(ids, zr["ids"])  # the same choice on the new machine
        np.testing.assert_array_equal(first, zr["effect"])
    eff, want = np.load(b / "effects.npy"), np.load(ref / "effects.npy")
    f = int(ids[0])
    assert eff[f, 3] == pytest.approx((2 * first[0, 3] + 2 * 1234.0) / 4, rel=1e-3)
    eff[f, 3] = want[f, 3]
    np.testing.assert_array_equal(eff, want)  # everything else as in the build that never moved
    assert sorted(c for s in segments(progress, "topup") for c in s.chunks) == list(range(len(segs)))


def test_redo_topup_puts_the_first_pass_back(topup_build, tmp_path):
    shutil.copytree(topup_build / "build", tmp_path / "build")
    cfg = topup_config(tmp_path)
    b = tmp_path / "build"
    with np.load(b / "topup_first.npz") as z:
        ids, first = z["ids"].tolist(), z["effect"]
    from steering_core.pack.builder import Builder

    builder = Builder(load_config(cfg), show_bar=False)
    try:
        builder.redo("topup")
    finally:
        builder.close()
    eff = np.load(b / "effects.npy")
    np.testing.assert_array_equal(eff[ids], first)
    assert not (b / "topup_first.npz").exists() and not (b / "topup_extra.npy").exists()
    con = connect(b / "build.duckdb", read_only=True)
    assert con.execute("SELECT count(*) FROM topup_chunks").fetchone()[0] == 0
    stored = con.execute("SELECT target_feature, effect FROM feature_effects WHERE source_feature = ? AND rank IS NOT "
                         "NULL ORDER BY rank", [ids[0]]).fetchall()
    con.close()
    assert [t for t, _ in stored] == np.argsort(-np.abs(eff[ids[0]]), kind="stable")[:8].tolist()
    assert [e for _, e in stored] == pytest.approx([float(eff[ids[0], t]) for t, _ in stored], abs=1e-6)
    # the stages that read the effects are done: the top-up will not run under them
    builder = Builder(load_config(cfg), show_bar=False)
    try:
        with pytest.raises(PackConfigError, match="redo CONFIG stability reference neighbors approximator maps ship"):
            builder.run()
        builder.redo("stability", "reference", "neighbors", "approximator", "maps", "ship")
    finally:
        builder.close()
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_build(topup_build / "build", b)


def test_carried_topup_segments_of_another_rule_are_refused(tmp_path):
    from types import SimpleNamespace

    from steering_core.pack.carry import carried_chunks

    arrays = dict(chunks=np.array([0]), sizes=np.array([1]), ids=np.array([5]), effect=np.zeros((1, 3), np.float16),
                  se=np.zeros((1, 3), np.float16), alpha=np.ones(1, np.float32), dce=np.ones(1, np.float32),
                  seconds=np.ones(1), rule=np.array('{"contested_over": 20}'))
    np.savez(tmp_path / "topup-0000-0000.npz", **arrays)
    (tmp_path / "topup-0001-0001.tmp.npz").write_bytes(b"PK\x03\x04 cut short")  # killed while writing: ignored
    b = SimpleNamespace(cfg=SimpleNamespace(progress=str(tmp_path)))
    assert [s.chunks for s in segments(tmp_path, "topup")] == [[0]]
    got = list(carried_chunks(b, set(), "topup", expect={"rule": '{"contested_over": 20}'}))
    assert [j.ids for j, _, _ in got] == [(5,)]
    with pytest.raises(PackConfigError, match="was measured with rule"):
        list(carried_chunks(b, set(), "topup", expect={"rule": '{"contested_over": 30}'}))


def test_effects_segments_saved_after_pooling_hold_the_first_pass(topup_build, tmp_path):
    progress = tmp_path / "progress"
    shutil.copytree(topup_build / "progress", progress)
    for s in segments(progress):
        s.path.unlink()
    shutil.copytree(topup_build / "build", tmp_path / "build")
    res = run_cli(["save-progress", str(topup_config(tmp_path, progress))])
    assert res.returncode == 0, res.stderr[-2000:]
    with np.load(tmp_path / "build" / "topup_first.npz") as z:
        ids, first = z["ids"].tolist(), z["effect"]
    (seg,) = segments(progress)
    with np.load(seg.path) as z:
        where = {int(f): r for r, f in enumerate(z["ids"])}
        np.testing.assert_array_equal(z["effect"][[where[f] for f in ids]].astype(np.float32), first)


@pytest.mark.parametrize("rollouts, baseline, says", [
    (2, 4, "must exceed \\[effects\\] rollouts_per_prompt \\(2\\)"),
    (6, 4, "baseline_rollouts_per_prompt to at least 6"),
    (4, 4, "share must be in"),
    (3, 4, "at least 2 rollouts per prompt"),
])
def test_impossible_topup_settings_are_refused(tmp_path, rollouts, baseline, says):
    cfg = topup_config(tmp_path, rollouts=rollouts, baseline=baseline)
    if "share" in says:
        cfg.write_text(cfg.read_text() + "share = 1.5\n")
    with pytest.raises(PackConfigError, match=says):
        load_config(cfg)
    if rollouts == 6:  # and from the command line, before anything is written
        res = run_cli(["build", str(cfg), "--quiet"])
        assert res.returncode != 0 and says in res.stderr and not (tmp_path / "build").exists()


def test_the_card_says_how_many_rollouts_each_feature_had(topup_build, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from steering_core.pack.reader import FeaturePack

    cache = tmp_path / "cache"
    shutil.copytree(topup_build / "pack", cache / "pack")
    pack = FeaturePack(cache / "pack")
    ids = json.loads(pack.meta["effects_topped_up"])
    other = next(f for f in range(40) if f not in ids)
    assert pack.effects_budget(ids[0]) == (12, True) and pack.effects_budget(other) == (6, False)
    pack.close()
    monkeypatch.setenv("STEERING_MODEL", "tiny")
    monkeypatch.setenv("STEERING_CACHE_DIR", str(cache))
    monkeypatch.setenv("STEERING_SAE", str(cache / "pack" / "sae"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "features.py"),
                           default_timeout=120).run()
    at.radio(key="search_mode").set_value("Feature id")
    for fid, says, topped in ((ids[0], "over 12 steered rollouts", True), (other, "over 6 steered rollouts", False)):
        at.text_input(key="search_query").set_value(str(fid))
        at = at.run()
        assert not at.exception, at.exception
        caption = next(c.value for c in at.caption if c.value.startswith(f"Effects of #{fid}:"))
        assert says in caption and ("Topped up" in caption) == topped


def test_the_adaptive_embedded_config_differs_only_in_its_budget():
    """packs/embedded-adaptive.toml must build the same pack as packs/embedded.toml (model, layer,
    SAE, corpus, α, control, reference) on the adaptive budget: 224 rollouts, 448 where contested."""
    root = Path(__file__).resolve().parents[2] / "packs"
    full, adaptive = load_config(root / "embedded.toml").to_dict(), load_config(root / "embedded-adaptive.toml").to_dict()
    assert adaptive["effects"] == {**full["effects"], "rollouts_per_prompt": 16}
    assert adaptive["topup"]["rollouts_per_prompt"] == full["effects"]["rollouts_per_prompt"] == 32
    assert full["topup"]["rollouts_per_prompt"] == 0
    same = {k for k in full if k not in ("name", "effects", "topup")}
    assert {k: adaptive[k] for k in same} == {k: full[k] for k in same}
    # α too, bracketing steps included: the two packs differ in the effects budget alone
    assert adaptive["alpha"] == full["alpha"] and full["alpha"]["refine"] == 0


def test_a_vector_is_topped_up_by_the_packs_rule(topup_build, tmp_path):
    """Measuring a feature's decoder row on demand reproduces the pack's stored effects whether the
    pack topped it up or not: the same first pass decides, and the same rollouts are added."""
    import torch

    from steering_core.measure.vector_effects import EffectCache, measure
    from steering_core.model.loading import load_model
    from steering_core.model.saes import load_sae_from_disk
    from steering_core.pack.reader import FeaturePack

    pack = FeaturePack(topup_build / "pack")
    model = load_model("tiny", precision="fp32")
    sae = load_sae_from_disk(pack.sae_dir, model)
    ids = json.loads(pack.meta["effects_topped_up"])
    other = next(f for f in range(40) if f not in ids)
    cache = EffectCache(tmp_path / "lib.duckdb")
    try:
        for fid, rollouts in ((ids[0], 12), (other, 6)):
            alpha = pack.feature(fid)["alpha"]
            m = measure(model, sae, pack, torch.from_numpy(pack.decoder_row(fid)), layer=1, alpha=alpha, cache=cache)
            assert m.rollouts == rollouts
            for e in pack.effects(fid, k=8):
                assert m.effects[e.feature_id] == pytest.approx(e.value, abs=2e-3, rel=2e-3)
            again = measure(model, sae, pack, torch.from_numpy(pack.decoder_row(fid)), layer=1, alpha=alpha, cache=cache)
            assert again.from_cache and again.rollouts == rollouts
    finally:
        cache.close()
        pack.close()
