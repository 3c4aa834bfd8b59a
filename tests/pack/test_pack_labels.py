"""Labels name output words only for features that steer well (a user-style audit found
"#630 · wedding, travel, trip → prediction, data" on a feature whose output score is below the
random directions' bar), and ``relabel`` rewrites a finished pack's labels in place, all or nothing."""

from __future__ import annotations

import shutil

import pytest
from packs_util import run_cli

from steering_core.describe.labels import NO_OUTPUT_EFFECT, feature_description
from steering_core.storage.db import connect


def test_a_feature_that_does_not_steer_well_gets_no_output_words():
    desc = feature_description([" wedding", " bride"], ["church"], [" love", " prediction"], [" war"], steers=False)
    assert desc == f"Fires on wedding, bride. Around: church. {NO_OUTPUT_EFFECT}"
    assert "Steering raises love" in feature_description([" wedding"], [], [" love"], steers=True)


@pytest.fixture()
def pack_copy(tiny_pack_build, tmp_path):
    dst = tmp_path / "pack"
    shutil.copytree(tiny_pack_build / "pack", dst)
    return dst


def _rows(db):
    con = connect(db, read_only=True)
    try:
        bar = float(con.execute("SELECT value FROM meta WHERE key = 'output_score_steers_well'").fetchone()[0])
        rows = con.execute("SELECT feature_id, label, description, output_score FROM features WHERE live "
                           "ORDER BY feature_id").fetchall()
        emb = con.execute("SELECT count(*) FROM label_embeddings").fetchone()[0]
        rule = con.execute("SELECT value FROM meta WHERE key = 'label_rule'").fetchone()
    finally:
        con.close()
    return bar, rows, emb, rule


def test_labels_follow_the_steers_well_bar_and_relabel_rewrites_a_shipped_pack(pack_copy):
    db = pack_copy / "pack.duckdb"
    bar, rows, emb, _ = _rows(db)
    assert any(score < bar for *_, score in rows) and any(score >= bar for *_, score in rows), "need both kinds"
    # the build's own labels stage already follows the rule
    for fid, label, desc, score in rows:
        if score < bar:
            assert " → " not in label and desc.endswith(NO_OUTPUT_EFFECT) and "Steering raises" not in desc, fid
    # a pack labelled by the old rule (output words for everyone) is put right by relabel
    con = connect(db)
    con.execute("UPDATE features SET label = label || ' → noise', description = description || ' Steering raises noise.' "
                "WHERE live")
    con.execute("DELETE FROM meta WHERE key = 'label_rule'")
    con.close()
    res = run_cli(["relabel", str(pack_copy)])
    assert res.returncode == 0 and "relabelled" in res.stdout, res.stderr[-2000:]
    bar2, after, emb2, rule = _rows(db)
    assert after == rows and emb2 == emb and rule == ("outputs-if-steers-well",)
    assert not (pack_copy / "pack.duckdb.relabel.tmp").exists()


def test_relabel_refuses_what_is_not_a_finished_pack_and_leaves_it_untouched(tmp_path):
    con = connect(tmp_path / "pack.duckdb")
    con.execute("CREATE TABLE features (feature_id INTEGER)")
    con.close()
    before = (tmp_path / "pack.duckdb").read_bytes()
    res = run_cli(["relabel", str(tmp_path)])
    assert res.returncode == 2 and "is not a finished pack" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "pack.duckdb").read_bytes() == before and not list(tmp_path.glob("*.tmp"))
    res = run_cli(["relabel", str(tmp_path / "nowhere")])
    assert res.returncode == 2 and "There is no pack database" in res.stderr


def test_relabel_refuses_a_file_that_is_not_a_database_without_writing_beside_it(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database")
    res = run_cli(["relabel", str(tmp_path / "notes.txt")])
    assert res.returncode == 2 and "notes.txt is not a pack database" in res.stderr and "Traceback" not in res.stderr
    assert ".tmp" not in res.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_shipped_pack_is_readable_by_others(tiny_pack_build):
    """safetensors and mkstemp write 0600; a pack is served by whoever runs the app."""
    import os
    import stat

    from steering_core.storage.files import file_mode

    for p in (tiny_pack_build / "pack").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(os.stat(p).st_mode) == file_mode(), p


def test_the_cli_runner_works_after_an_app_test_left_a_page_as_main(tmp_path, monkeypatch):
    """Streamlit's AppTest installs the page it ran as ``__main__`` and leaves it there; a pack
    command started afterwards in the same test worker re-ran that page first, and died before
    starting when the page failed outside Streamlit (CI failed on it, depending on which files a
    worker had run before). Here the stand-in page leaves a mark and fails."""
    import sys
    import types

    script = tmp_path / "page.py"
    script.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\nraise RuntimeError('not in Streamlit')\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", page)
    res = run_cli(["relabel", str(tmp_path / "nowhere")])
    assert res.returncode == 2 and "There is no pack database" in res.stderr
    assert not (tmp_path / "ran").exists() and sys.modules["__main__"] is page  # never run; given back
