"""The pack pipeline end to end on a tiny random model: contract tables, a build killed at the
worst moments that resumes to identical tables, and clear refusals of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packs_util import TINY_TOML, VOLATILE, run_cli, write_config  # noqa: E402

from steering_core.pack.builder import Builder
from steering_core.pack.config import PackConfigError, load_config
from steering_core.storage.db import connect

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)


def tables(db: Path) -> dict:
    con = connect(db, read_only=True)
    try:
        out = {
            "features": con.execute("SELECT * EXCLUDE (dec_x, dec_y, eff_x, eff_y) FROM features ORDER BY feature_id").fetchall(),
            "maps": con.execute("SELECT dec_x, dec_y, eff_x, eff_y FROM features ORDER BY feature_id").fetchnumpy(),
            "effects": con.execute("SELECT * FROM feature_effects ORDER BY source_feature, target_feature").fetchall(),
            "generic": con.execute("SELECT * FROM generic_response ORDER BY target_feature").fetchall(),
            "neighbors": con.execute("SELECT * FROM feature_neighbors ORDER BY kind, feature_id, rank").fetchall(),
            "snippets": con.execute("SELECT * FROM feature_snippets ORDER BY feature_id, kind, rank").fetchall(),
            "meta": {k: v for k, v in con.execute("SELECT * FROM meta").fetchall() if not k.startswith(VOLATILE)},
        }
    finally:
        con.close()
    return out


@pytest.fixture(scope="module")
def reference_build(tiny_pack_build):
    return tiny_pack_build


def test_contract_tables_and_every_live_feature_measured(reference_build):
    db = reference_build / "pack" / "pack.duckdb"
    assert (reference_build / "pack" / "sae" / "cfg.json").exists()
    assert (reference_build / "pack" / "approximator.safetensors").exists()
    con = connect(db, read_only=True)
    try:
        names = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        assert {"meta", "features", "feature_effects"} <= names
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        for key in ("model_id", "hook_point", "layer", "d_model", "d_sae", "sae_id", "effects_rollouts", "build_date",
                    "sae_explained_variance", "sae_explained_variance_se", "sae_explained_variance_typical",
                    "sae_explained_variance_typical_se", "sae_massive_tokens", "sae_delta_ce_se",
                    "approximator_r2_heldout", "approximator_r2_heldout_se", "sink_tokens", "sink_features",
                    "stability_median_top10_overlap",
                    "specific_stability_median_top10_overlap", "self_in_top10_share", "specific_self_in_top10_share",
                    "reference_top10_overlap_median", "specific_reference_top10_overlap_median", "reference_features",
                    "precision", "effect_basis", "control_directions"):
            assert key in meta, key
        assert meta["hook_point"] == "blocks.1.hook_resid_post"
        live = [r[0] for r in con.execute("SELECT feature_id FROM features WHERE live").fetchall()]
        assert live
        # every feature has its share of activation on attention sinks, a share
        assert con.execute("SELECT count(*) FROM features WHERE sink_share IS NULL OR sink_share < 0 "
                           "OR sink_share > 1").fetchone()[0] == 0
        counts = dict(con.execute("SELECT source_feature, count(rank) FROM feature_effects GROUP BY 1").fetchall())
        assert all(counts.get(f, 0) == 8 for f in live)  # top_effects = 8 in the tiny config
        spec_counts = dict(con.execute("SELECT source_feature, count(rank_specific) FROM feature_effects "
                                       "GROUP BY 1").fetchall())
        assert all(spec_counts.get(f, 0) == 8 for f in live)
        # every stored effect has its SE and its specific value
        assert con.execute("SELECT count(*) FROM feature_effects WHERE effect_se IS NULL OR specific IS NULL "
                           "OR specific_se IS NULL").fetchone()[0] == 0
        # stored values are the k largest |effect| of the dense measurement
        mat = np.load(reference_build / "build" / "effects.npy")
        f = live[0]
        stored = con.execute("SELECT target_feature, effect FROM feature_effects WHERE source_feature = ? "
                             "AND rank IS NOT NULL ORDER BY rank", [f]).fetchall()
        expect = np.argsort(-np.abs(mat[f]), kind="stable")[:8]
        assert sorted(t for t, _ in stored) == sorted(expect.tolist())
        for t, e in stored:
            assert e == pytest.approx(float(mat[f, t]), abs=1e-6)
        # the generic response is the mean of the random directions' effects, subtracted exactly
        ctrl = np.load(reference_build / "build" / "control_effects.npy")
        assert ctrl.shape == (8, mat.shape[1])
        gen = dict(con.execute("SELECT target_feature, generic FROM generic_response").fetchall())
        np.testing.assert_allclose([gen[t] for t in range(mat.shape[1])], ctrl.astype(np.float64).mean(0), atol=1e-6)
        for e, sp, t in con.execute("SELECT effect, specific, target_feature FROM feature_effects").fetchall():
            assert sp == pytest.approx(e - gen[t], abs=1e-6)
        # exact output descriptions for every feature: sorted gains and losses, a finite output score
        outs = con.execute("SELECT feature_id, gain_values, loss_values, output_score, gains FROM feature_outputs"
                           ).fetchall()
        assert {o[0] for o in outs} == set(range(mat.shape[0]))
        for _f, gv, lv, score, gains in outs:
            assert gv == sorted(gv, reverse=True) and lv == sorted(lv) and gv[0] >= 0 >= lv[0]
            assert np.isfinite(score) and len(gains) == 10
        alphas = con.execute("SELECT alpha FROM features WHERE live").fetchall()
        assert all(a[0] is not None and a[0] > 0 for a in alphas)
    finally:
        con.close()


@pytest.mark.parametrize("point", ["effects:1:before_commit", "effects:2:after_commit"])
def test_kill_mid_effects_resumes_to_identical_tables(reference_build, tmp_path, point):
    cfg = write_config(tmp_path)
    res = run_cli(["build", str(cfg), "--quiet"], {"STEERING_PACK_CRASH_AT": point})
    assert res.returncode == -9, (res.returncode, res.stderr[-2000:])
    con = connect(tmp_path / "build" / "build.duckdb", read_only=True)
    chunks = con.execute("SELECT count(*) FROM effect_chunks").fetchone()[0]
    con.close()
    assert chunks == (1 if point.endswith("before_commit") else 3)
    assert not (tmp_path / "pack").exists()
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    a = tables(reference_build / "pack" / "pack.duckdb")
    b = tables(tmp_path / "pack" / "pack.duckdb")
    for key in ("features", "effects", "generic", "neighbors", "snippets", "meta"):
        assert a[key] == b[key], key
    for col in a["maps"]:
        np.testing.assert_allclose(a["maps"][col], b["maps"][col], atol=1e-4)


def test_bad_hook_is_refused_before_any_work(tmp_path):
    cfg = write_config(tmp_path)
    text = cfg.read_text().replace("layer = 1", 'hook = "blocks.9.hook_resid_post"')
    cfg.write_text(text)
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 2
    assert "does not exist" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "build" / "corpus.npz").exists()


def test_sae_of_the_wrong_size_is_refused(tmp_path, tiny_hf):
    from steering_core.model.saes import save_sae, tiny_sae
    from steering_core.model.tiny import tiny_model

    other = tiny_model("hf", n_layers=3, d_model=32, seed=1)
    save_sae(tiny_sae(other, 1, d_sae=16), tmp_path / "wrong_sae")
    cfg = load_config(write_config(tmp_path, sae=str(tmp_path / "wrong_sae")))
    with pytest.raises(Exception) as info:
        Builder(cfg, show_bar=False, model=tiny_hf).run()
    assert "32" in str(info.value) and "64" in str(info.value)
    assert not (tmp_path / "build" / "corpus.npz").exists()


def test_existing_sae_skips_training(tmp_path, tiny_tl):
    """A TransformerLens model with an existing sae_lens SAE: no SAE training, effects measured."""
    from steering_core.model.saes import save_sae, tiny_sae

    save_sae(tiny_sae(tiny_tl, 1, d_sae=24, k=4), tmp_path / "given_sae")
    cfg = load_config(write_config(tmp_path, sae=str(tmp_path / "given_sae")))
    cfg.corpus.generated_tokens = 0
    Builder(cfg, show_bar=False, model=tiny_tl).run()
    assert not (tmp_path / "build" / "sae_checkpoints").exists()
    con = connect(tmp_path / "pack" / "pack.duckdb", read_only=True)
    n = con.execute("SELECT count(DISTINCT source_feature) FROM feature_effects").fetchone()[0]
    live = con.execute("SELECT count(*) FROM features WHERE live").fetchone()[0]
    con.close()
    assert n == 24 >= live > 0  # every feature is measured, dead ones included


def test_a_quiet_build_draws_no_bars_not_even_sae_lens_ones(reference_build):
    """``--quiet`` is for background builds whose output goes to a log: sae_lens' trainer and
    scaler drew "Training SAE" and "Estimating norm scaling factor" bars there all the same."""
    err = (reference_build / "build.stderr").read_text()
    assert "it/s" not in err and "%|" not in err and "Training SAE" not in err, err[-1000:]


def test_corrupted_and_locked_build_database(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "build").mkdir()
    db = tmp_path / "build" / "build.duckdb"
    db.write_bytes(b"this is not a database" * 100)
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 2 and "not a DuckDB database" in res.stderr
    assert db.read_bytes() == b"this is not a database" * 100  # untouched
    db.unlink()
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        res = run_cli(["build", str(cfg), "--quiet"])
        assert res.returncode == 2 and "another process" in res.stderr
    finally:
        holder.kill()
        holder.wait()


def test_unknown_config_keys_are_errors(tmp_path):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text() + "\n[effects2]\nx = 1\n")
    with pytest.raises(PackConfigError, match="Unknown"):
        load_config(cfg)
    cfg.write_text(TINY_TOML.replace("new_tokens = 4", "new_tokenz = 4").format(model="tiny", out="o", ship="s", sae="train"))
    with pytest.raises(PackConfigError, match="new_tokenz"):
        load_config(cfg)


def test_disk_full_while_saving_the_corpus(tmp_path, monkeypatch, capsys):
    """The CLI answers a full disk with a sentence, and leaves no partial corpus file behind."""
    import steering_core.pack.corpus as corpus_mod
    from steering_core.pack import cli as pack_mod
    real = np.savez_compressed

    def full_disk(path, **arrays):
        real(path, **arrays)  # a partial file exists when the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(corpus_mod.np, "savez_compressed", full_disk)
    monkeypatch.setattr(pack_mod, "load_model", lambda spec, precision=None: __import__("steering_core").tiny_model(
        "hf", 3, 64, 0))
    cfg = write_config(tmp_path)
    assert pack_mod.main(["build", str(cfg), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "disk is full" in err
    assert not list((tmp_path / "build").glob("corpus*"))


def test_disk_full_during_commit_writes_nothing(tmp_path, monkeypatch):
    from steering_core.pack.tables import ensure_schema
    from steering_core.storage import db as store
    con = connect(tmp_path / "x.duckdb")
    ensure_schema(con)
    with pytest.raises(OSError):
        with store.transaction(con):
            con.execute("INSERT INTO meta VALUES ('a', 'b')")
            raise OSError(28, "No space left on device")
    assert con.execute("SELECT count(*) FROM meta").fetchone()[0] == 0
    con.close()


def test_rebuilding_the_statistics_keeps_the_measured_effects(reference_build, tmp_path):
    """``redo corpus … stats`` after the effects (how a corpus fix ships without hours of
    rollouts): the stats rerun must keep each feature's α, ΔCE, baseline and output columns, which
    the stats stage once wiped by deleting and reinserting every feature row."""
    import shutil

    shutil.copytree(reference_build / "build", tmp_path / "build")
    cfg = write_config(tmp_path)
    before = tables(tmp_path / "build" / "build.duckdb")
    res = run_cli(["redo", str(cfg), "corpus", "activations", "stats", "labels"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (tmp_path / "build" / "corpus.npz").exists() and not (tmp_path / "build" / "acts.npy").exists()
    res = run_cli(["build", str(cfg), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    after = tables(tmp_path / "build" / "build.duckdb")
    assert after["features"] == before["features"]  # same corpus, same statistics, nothing lost
    assert after["snippets"] == before["snippets"] and after["effects"] == before["effects"]


def test_every_live_feature_is_described_from_both_sides(reference_build):
    import json

    from steering_core.describe.words import is_word

    con = connect(reference_build / "pack" / "pack.duckdb", read_only=True)
    try:
        rows = con.execute("SELECT feature_id, label, description, token_change, output_score, top_tokens "
                           "FROM features WHERE live").fetchall()
        snips = con.execute("SELECT feature_id, tokens, acts, n_similar FROM feature_snippets").fetchall()
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        n_emb = con.execute("SELECT count(*) FROM label_embeddings").fetchone()[0]
    finally:
        con.close()
    assert rows and n_emb == con_count_features(reference_build)
    for fid, label, desc, tc, score, top in rows:
        assert desc.startswith("Fires on"), (fid, desc)
        change = json.loads(tc)
        assert len(change["gains"]) == 10 and all(dp >= 0 for _, dp in change["gains"])
        assert np.isfinite(score)
        # the output side of a label holds dictionary words only (never a lens or TokenChange piece)
        if " → " in label:
            assert all(is_word(w) for w in label.split(" → ")[1].split(", ")), label
    assert np.isfinite(json.loads(meta["output_score_steers_well"]))
    # no two snippets of a feature are the same text apart from the highlighted token
    shown: dict[int, set] = {}
    for fid, tokens, acts, n_similar in snips:
        peak = int(np.argmax(acts))
        key = tuple(t if i != peak else None for i, t in enumerate(tokens))
        assert key not in shown.setdefault(fid, set()), (fid, tokens)
        shown[fid].add(key)
        assert n_similar >= 1


def con_count_features(build) -> int:
    con = connect(build / "pack" / "pack.duckdb", read_only=True)
    try:
        return con.execute("SELECT count(*) FROM features").fetchone()[0]
    finally:
        con.close()
