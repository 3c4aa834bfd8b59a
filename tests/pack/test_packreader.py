"""Reading a built pack: what the feature views ask for, and clear answers to bad ids."""

from __future__ import annotations

import pytest

from steering_core.pack.reader import FeatureLookupError, FeaturePack
from steering_core.storage.db import StoreError, connect


def test_summary_reports_quality_figures(pack):
    s = pack.summary()
    assert s["hook"] == "blocks.1.hook_resid_post"
    assert s["d_sae"] == 40
    assert s["measured_features"] >= s["live_features"] > 0  # dead features are measured too
    assert -1.0 <= s["explained_variance"] <= 1.0
    assert s["approximator_r2"] is not None and s["stability_top10_overlap"] is not None


def test_effects_are_ranked_by_magnitude_and_labelled(pack):
    fid = pack.con.execute("SELECT min(feature_id) FROM features WHERE measured").fetchone()[0]
    effs = pack.effects(fid)
    assert len(effs) == 8
    mags = [abs(e.value) for e in effs]
    assert mags == sorted(mags, reverse=True)
    assert all(e.label for e in effs)
    assert all(e.se is not None and e.se >= 0 for e in effs)  # every stored effect carries its standard error


def test_neighbor_kinds(pack):
    fid = pack.con.execute("SELECT min(feature_id) FROM features WHERE measured").fetchone()[0]
    cos = pack.neighbors("cosine", fid)
    assert len(cos) == 5 and fid not in [c.feature_id for c in cos]
    assert [c.value for c in cos] == sorted([c.value for c in cos], reverse=True)
    sim = pack.neighbors("effect_similar", fid)
    assert len(sim) == 5 and all(-1.0001 <= c.value <= 1.0001 for c in sim)
    # actions of t: sources whose measured effect on t is largest and positive
    t = pack.con.execute("SELECT feature_id FROM feature_neighbors WHERE kind = 'action' LIMIT 1").fetchone()[0]
    acts = pack.neighbors("action", t)
    assert acts and all(a.value > 0 for a in acts)


def test_snippets_have_per_token_activations(pack):
    fid = pack.con.execute("SELECT min(feature_id) FROM features WHERE live").fetchone()[0]
    snips = pack.snippets(fid)
    top = [s for s in snips if s["kind"] == "top"]
    assert 1 <= len(top) <= 3
    for s in top:
        assert len(s["tokens"]) == len(s["acts"])
        assert max(s["acts"]) == pytest.approx(s["max_act"], rel=1e-3)
    assert top[0]["max_act"] >= top[-1]["max_act"]


@pytest.mark.parametrize("bad", [-1, 40, 10**9, "abc", "3.5", None, ""])
def test_bad_feature_ids_get_a_sentence(pack, bad):
    with pytest.raises(FeatureLookupError) as info:
        pack.feature(bad)
    assert "0 to 39" in str(info.value)


def test_numeric_strings_are_accepted(pack):
    assert pack.feature(" 3 ")["feature_id"] == 3


def test_empty_database_is_not_a_pack(tmp_path):
    con = connect(tmp_path / "empty.duckdb")
    con.close()
    with pytest.raises(StoreError, match="not a feature pack"):
        FeaturePack(tmp_path / "empty.duckdb")


def test_missing_pack(tmp_path):
    with pytest.raises(StoreError, match="No pack database"):
        FeaturePack(tmp_path / "nothing_here")


def test_the_alpha_basis_names_the_text_every_alpha_was_matched_on(pack):
    """The card and the Steer page's Automatic α match 0.5 nats on different text; the card says which."""
    import json

    spec = json.loads(pack.con.execute("SELECT value FROM meta WHERE key = 'alpha_spec'").fetchone()[0])
    n, t = spec["ref_windows"], spec["ref_tokens"]
    assert pack.alpha_basis() == f"{n} held-out window{'s' if n != 1 else ''} × {t} tokens of the pack's corpus"
    # a miss is reported with its checked ΔCE; a hit is not
    band = spec["tolerance"] * spec["target_dce"]
    rows = pack.con.execute("SELECT feature_id, alpha_dce FROM features WHERE measured").fetchall()
    for fid, dce in rows:
        missed = pack.alpha_missed(fid)
        assert missed == ((dce, spec["target_dce"]) if abs(dce - spec["target_dce"]) > band else None), (fid, dce)
    assert pack.alpha_missed({"alpha_dce": 3.5}) == (3.5, spec["target_dce"])  # a row as feature() gives it
    assert pack.alpha_missed({"alpha_dce": spec["target_dce"] + 0.9 * band}) is None
    assert pack.alpha_missed({"alpha_dce": None}) is None


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_an_empty_feature_id_asks_for_one_instead_of_echoing_nothing(pack, empty):
    with pytest.raises(FeatureLookupError, match=r"^Enter a feature id, a whole number from 0 to 39\.$"):
        pack.check_feature(empty)


def test_every_read_is_safe_from_concurrent_threads_and_cursors_stay_few(pack):
    """The app shares one open pack between every session and rerun, each on its own thread. Reads
    through the shared connection failed with DuckDB's 'connection is busy with another call' when
    two ran at once (seen in the browser: the Features page's summary). Every read must take a
    cursor of its own, and a finished thread must not leave its cursor behind (a long session
    starts a thread per rerun)."""
    import threading

    fid = pack.check_feature(pack.con.execute("SELECT min(feature_id) FROM features WHERE measured").fetchone()[0])
    want = (pack.summary(), pack.feature(fid), pack.effects(fid), pack.neighbors("cosine", fid), pack.snippets(fid))
    errors, got = [], []
    start = threading.Barrier(8)

    def read():
        try:
            start.wait()
            for _ in range(25):
                got.append((pack.summary(), pack.feature(fid), pack.effects(fid), pack.neighbors("cosine", fid),
                            pack.snippets(fid)))
        except Exception as exc:  # noqa: BLE001 - the failure is what the test reports
            errors.append(repr(exc))

    for _ in range(3):  # several generations of threads, as reruns are
        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and len(got) == 3 * 8 * 25 and all(g == want for g in got)
    assert pack.open_cursors() <= 8  # at most one per thread that read at the same time
