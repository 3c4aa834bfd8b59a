"""The feature browser's library side on the tiny pack: lists and filters against a direct SQL
reference, predicted effects, search, what-fires-here, neighbourhoods and grown groups, user
labels and notes (never written into the pack), workspace import/export, and bad input."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from steering_core.browse import (
    ExploreError,
    ListFilter,
    ListRow,
    actions_list,
    baseline_activation,
    compare_groups,
    cosine_list,
    effect_similar_list,
    effects_list,
    grow_from,
    grow_group,
    jaccard,
    neighbourhoods,
    rows_to_csv,
    rows_to_json,
    search_id,
    search_label,
    semantic_search,
    what_fires_here,
)
from steering_core.browse.usernotes import UserNotes, UserNotesError, Workspace, effective_label
from steering_core.errors import SteeringCoreError
from steering_core.pack.reader import FeatureLookupError, FeaturePack
from steering_core.pack.tables import ensure_schema
from steering_core.storage.db import connect

pytestmark = pytest.mark.heavy  # a minute or more: scheduled first (tests/conftest.py)

LISTS = {"effects": effects_list, "actions": actions_list, "cosine": cosine_list,
         "effect_similar": effect_similar_list}
EPS = 1e-2


@pytest.fixture(scope="module")
def pack_dir(tiny_pack_build):
    return tiny_pack_build / "pack"


@pytest.fixture(scope="module")
def pack(pack_dir):
    p = FeaturePack(pack_dir)
    yield p
    p.close()


@pytest.fixture(scope="module")
def feats(pack):
    """feature_id -> (label, density, baseline_act), straight from SQL."""
    rows = pack.con.execute("SELECT feature_id, label, density, baseline_act FROM features").fetchall()
    return {f: (lab, d, b) for f, lab, d, b in rows}


def reference(pack, feats, name: str, fid: int) -> list[tuple[int, float, float | None, float | None]]:
    """Every stored row of a list, rank order: (other, value, rel, density of other)."""
    if name == "effects":
        rows = pack.con.execute("SELECT target_feature, effect, rel_effect FROM feature_effects "
                                "WHERE source_feature = ? AND rank IS NOT NULL ORDER BY rank", [fid]).fetchall()
    else:
        kind = {"actions": "action", "cosine": "cosine", "effect_similar": "effect_similar"}[name]
        raw = pack.con.execute("SELECT other_id, value FROM feature_neighbors WHERE kind = ? AND feature_id = ? "
                               "ORDER BY rank", [kind, fid]).fetchall()
        if name == "actions":
            rows = [(o, v, v / (feats[fid][2] + EPS)) for o, v in raw]
        else:
            rows = [(o, v, None) for o, v in raw]
    return [(o, v, r, feats[o][1]) for o, v, r in rows]


def allowed(row, min_abs=0.0, min_rel=None, max_density=None, sign="any") -> bool:
    """The filters written out by hand (the reference the library must agree with)."""
    _o, v, r, d = row
    if abs(v) < min_abs:
        return False
    if sign == "positive" and not v > 0 or sign == "negative" and not v < 0:
        return False
    if min_rel is not None and (r is None or abs(r) < min_rel):
        return False
    if max_density is not None and d is not None and d > max_density:
        return False
    return True


def _thresholds(pack, feats, name):
    vals = [abs(r[1]) for f in range(pack.n_features) for r in reference(pack, feats, name, f)]
    rels = [abs(r[2]) for f in range(pack.n_features) for r in reference(pack, feats, name, f) if r[2] is not None]
    dens = sorted(d for _, d, _ in feats.values())
    return float(np.median(vals)), (float(np.median(rels)) if rels else 1.0), dens[len(dens) // 2]


FILTERS = ["none", "min_abs", "min_rel", "max_density", "positive", "negative", "combined"]


@pytest.mark.parametrize("name", list(LISTS))
@pytest.mark.parametrize("which", FILTERS)
def test_each_list_honours_each_filter(pack, feats, name, which):
    med_abs, med_rel, med_dens = _thresholds(pack, feats, name)
    kw = {"none": {}, "min_abs": {"min_abs": med_abs}, "min_rel": {"min_rel": med_rel},
          "max_density": {"max_density": med_dens}, "positive": {"sign": "positive"},
          "negative": {"sign": "negative"},
          "combined": {"min_abs": med_abs / 2, "max_density": med_dens, "sign": "positive"}}[which]
    flt = ListFilter(**kw)
    nonempty = 0
    for fid in range(pack.n_features):
        want = [r for r in reference(pack, feats, name, fid) if allowed(r, **kw)]
        got = LISTS[name](pack, fid, flt, k=64)
        # nothing allowed is dropped, nothing disallowed kept, order kept
        assert [r.feature_id for r in got] == [w[0] for w in want], (name, which, fid)
        for r, w in zip(got, want):
            assert r.value == pytest.approx(w[1])
            assert r.density == pytest.approx(w[3])
            assert r.label == feats[r.feature_id][0] and not r.predicted
            assert abs(r.value) >= flt.min_abs
            if flt.min_rel is not None:
                assert r.rel_value is not None and abs(r.rel_value) >= flt.min_rel
            if flt.max_density is not None:
                assert r.density <= flt.max_density
            if flt.sign != "any":
                assert (r.value > 0) == (flt.sign == "positive")
        # a filter still returns up to k rows: the first k allowed ones
        assert [r.feature_id for r in LISTS[name](pack, fid, flt, k=2)] == [w[0] for w in want[:2]]
        nonempty += bool(got)
    if which == "none" or (which == "min_abs"):
        assert nonempty > 0  # the reference is not vacuous
    if name in ("cosine", "effect_similar") and which == "min_rel":
        assert nonempty == 0  # these rows have no relative effect, so a relative filter hides them


@pytest.mark.parametrize("kw", [{"min_abs": float("nan")}, {"min_abs": -0.1}, {"min_rel": float("nan")},
                                {"min_rel": -1}, {"max_density": -0.5}, {"max_density": 1.5},
                                {"max_density": float("inf")}, {"sign": "up"}, {"min_abs": "0.1"},
                                {"min_abs": None}, {"min_rel": True}])
def test_bad_filters_are_clear_errors(kw):
    with pytest.raises(ExploreError) as info:
        ListFilter(**kw)
    assert len(str(info.value)) > 15 and isinstance(info.value, SteeringCoreError)


@pytest.mark.parametrize("k", [0, -3, "5", 2.5, True, 10**9])
def test_bad_k_is_a_clear_error(pack, k):
    with pytest.raises(ExploreError, match="between|whole number"):
        effects_list(pack, 0, k=k)


# -- predicted effects ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unmeasured(pack, pack_dir, tmp_path_factory):
    """A copy of the pack in which one measured feature lost its effects (measured = false)."""
    fid = int(pack.con.execute("SELECT min(feature_id) FROM features WHERE measured").fetchone()[0]) + 2
    copy = tmp_path_factory.mktemp("unmeasured") / "pack"
    shutil.copytree(pack_dir, copy)
    con = connect(copy / "pack.duckdb")
    con.execute("DELETE FROM feature_effects WHERE source_feature = ?", [fid])
    con.execute("UPDATE features SET measured = false WHERE feature_id = ?", [fid])
    con.execute("DELETE FROM feature_neighbors WHERE kind = 'cosine' AND feature_id = ?", [fid])  # as for a dead one
    con.close()
    p = FeaturePack(copy)
    yield p, fid
    p.close()


def _direct_prediction(pack_dir, fid) -> np.ndarray:
    from safetensors.torch import load_file

    from steering_core.measure.approximator import Approximator

    approx = Approximator.load(pack_dir / "approximator.safetensors")
    w_dec = load_file(str(pack_dir / "sae" / "sae_weights.safetensors"))["W_dec"]
    return approx.predict(w_dec[fid][None].float())[0].numpy()


def test_predicted_effects_only_for_the_unmeasured_feature(pack, unmeasured, pack_dir):
    upack, fid = unmeasured
    rows = effects_list(upack, fid, k=10)
    assert len(rows) == 10 and all(r.predicted for r in rows)
    pred = _direct_prediction(pack_dir, fid)
    order = np.argsort(-np.abs(pred), kind="stable")[:10]
    assert [r.feature_id for r in rows] == order.tolist()
    assert [r.value for r in rows] == pytest.approx(pred[order].tolist(), rel=1e-5, abs=1e-7)
    base = upack.con.execute("SELECT baseline_act FROM features ORDER BY feature_id").fetchnumpy()["baseline_act"]
    assert [r.rel_value for r in rows] == pytest.approx((pred[order] / (base[order] + EPS)).tolist(), rel=1e-4)
    # every other feature of the copy, and the same feature in the original pack, stays measured
    assert not any(r.predicted for r in effects_list(pack, fid))
    for other in range(upack.n_features):
        if other != fid:
            assert not any(r.predicted for r in effects_list(upack, other))


def test_predicted_effects_honour_filters(unmeasured, pack_dir):
    upack, fid = unmeasured
    pred = _direct_prediction(pack_dir, fid)
    cut = float(np.quantile(np.abs(pred), 0.7))
    flt = ListFilter(min_abs=cut, sign="negative")
    rows = effects_list(upack, fid, flt, k=64)
    want = [int(i) for i in np.argsort(-np.abs(pred), kind="stable") if abs(pred[i]) >= cut and pred[i] < 0]
    assert [r.feature_id for r in rows] == want and all(r.predicted for r in rows)


def test_cosine_list_is_computed_when_the_pack_stores_none(unmeasured, pack_dir):
    from safetensors.numpy import load_file

    upack, fid = unmeasured
    w = load_file(str(pack_dir / "sae" / "sae_weights.safetensors"))["W_dec"].astype(np.float64)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    cos = w @ w[fid]
    cos[fid] = -np.inf
    want = np.argsort(-cos, kind="stable")[:6]
    rows = cosine_list(upack, fid, k=6)
    assert [r.feature_id for r in rows] == want.tolist() and not any(r.predicted for r in rows)
    assert [r.value for r in rows] == pytest.approx(cos[want].tolist(), abs=1e-5)
    assert all(abs(r.value) >= 0.2 for r in cosine_list(upack, fid, ListFilter(min_abs=0.2), k=64))


def test_no_measurement_and_no_approximator_is_a_sentence(unmeasured, tmp_path):
    upack, fid = unmeasured
    copy = tmp_path / "pack"
    shutil.copytree(upack.dir, copy)
    (copy / "approximator.safetensors").unlink()
    p = FeaturePack(copy)
    try:
        with pytest.raises(ExploreError, match="no measured effects.*no effect approximator"):
            effects_list(p, fid)
    finally:
        p.close()


# -- search --------------------------------------------------------------------------------------


def _unique_labels(feats, n=6):
    counts = {}
    for lab, _, _ in feats.values():
        counts[lab] = counts.get(lab, 0) + 1
    picks = [(f, lab) for f, (lab, _, _) in sorted(feats.items()) if lab and counts[lab] == 1]
    return picks[:: max(1, len(picks) // n)][:n]


@pytest.mark.parametrize("text", ["7", " 7 ", "#7", 7, np.int64(7)])
def test_search_by_id(pack, feats, text):
    hit = search_id(pack, text)
    assert hit.feature_id == 7 and hit.label == feats[7][0]


def test_search_by_label_substring_finds_its_own_feature_first(pack, feats):
    picks = _unique_labels(feats)
    assert picks
    for fid, label in picks:
        assert search_label(pack, label)[0].feature_id == fid
        assert search_label(pack, label.upper())[0].feature_id == fid  # case-insensitive
    # every hit really contains the text, and every feature that contains it is found
    q = "a"
    hits = search_label(pack, q, k=1000)
    want = {f for f, (lab, _, _) in feats.items() if q in lab.lower()}
    assert {h.feature_id for h in hits} == want


def test_label_search_treats_wildcards_literally_and_empty_hits_are_empty(pack):
    assert search_label(pack, "%") == []
    assert search_label(pack, "zzzq-no-such-label") == []


def test_semantic_search_finds_its_own_description_first(pack):
    """The pack embeds each description's words (what it fires on, around, and what steering
    raises), not the label: a feature's own search text is its best query."""
    from steering_core.describe.labels import search_text

    rows = pack.con.execute("SELECT f.feature_id, f.top_tokens, f.context_words, f.top_logits, o.gains "
                            "FROM features f LEFT JOIN feature_outputs o USING (feature_id) WHERE f.live").fetchall()
    texts = [(f, search_text(top or [], ctx or [], gains or lens or [])) for f, top, ctx, lens, gains in rows]
    counts: dict[str, int] = {}
    for _, t in texts:
        counts[t] = counts.get(t, 0) + 1
    unique = [(f, t) for f, t in texts if t and counts[t] == 1]
    assert unique
    for fid, label in unique[:: max(1, len(unique) // 4)][:4]:
        hits = semantic_search(pack, label, k=5)
        assert hits[0].feature_id == fid and hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)


@pytest.mark.parametrize("fn", [search_label, semantic_search, search_id])
@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_queries_get_a_sentence(pack, fn, text):
    with pytest.raises(ExploreError, match="[Tt]ype"):
        fn(pack, text)


@pytest.fixture(scope="module")
def model_and_sae(pack_dir):
    from steering_core.model.loading import load_model
    from steering_core.model.saes import load_sae

    model = load_model("tiny")
    return model, load_sae(str(pack_dir / "sae"), model)


def test_what_fires_here_equals_a_direct_encode(model_and_sae, pack, feats):
    from steering_core.model.recording import record_residuals

    model, sae = model_and_sae
    text = "The weather is nice today."
    got = what_fires_here(model, sae, sae.layer, text, k=3, pack=pack)
    ids, mask = model.tokenize([text])
    acts = record_residuals(model, ids, mask, [sae.layer])[sae.layer][0]
    direct = sae.encode(acts.float()).float()
    assert len(got) == ids.shape[1]
    assert "".join(t.token for t in got) == text
    # position 0 is an attention sink (activations in the thousands on real models): shown, not analysed
    assert got[0].skipped and got[0].features == () and got[0].strength == 0
    for pos, tok in enumerate(got[1:], start=1):
        assert not tok.skipped
        row = direct[pos]
        top = torch.topk(row, 3)
        want = [(int(i), float(v)) for v, i in zip(top.values, top.indices) if v > 0]
        assert [f.feature_id for f in tok.features] == [w[0] for w in want]
        assert [f.activation for f in tok.features] == pytest.approx([w[1] for w in want], rel=1e-5, abs=1e-6)
        assert all(f.label == feats[f.feature_id][0] for f in tok.features)


def test_what_fires_here_hides_dense_features_and_scales_colour_per_feature(model_and_sae, pack, feats):
    model, sae = model_and_sae
    text = "The weather is nice today."
    full = what_fires_here(model, sae, None, text, k=3, pack=pack)
    dens = {f: d for f, (_lab, d, _b) in feats.items()}
    shown = {f.feature_id for t in full for f in t.features}
    cut = sorted(dens[f] for f in shown)[len(shown) // 2]  # hide the denser half of what fired
    some = what_fires_here(model, sae, None, text, k=3, pack=pack, max_density=cut)
    assert all(dens[f.feature_id] <= cut for t in some for f in t.features)
    assert any(dens[f] > cut for f in shown)  # the filter had something to remove
    max_act = dict(pack.con.execute("SELECT feature_id, max_act FROM features").fetchall())
    for t in full:
        if t.features:
            top = t.features[0]
            assert t.strength == pytest.approx(min(1.0, top.activation / max_act[top.feature_id]))


def test_test_this_feature_on_my_text_reads_one_feature(model_and_sae, pack):
    from steering_core.browse import feature_on_text

    model, sae = model_and_sae
    text = "The weather is nice today."
    every = what_fires_here(model, sae, None, text, k=sae.d_sae, pack=pack)
    fid = next(f.feature_id for t in every for f in t.features)
    r = feature_on_text(model, sae, text, fid, pack=pack)
    assert r.acts[0] is None and len(r.tokens) == len(every)
    for t, a in zip(every[1:], r.acts[1:]):
        want = next((f.activation for f in t.features if f.feature_id == fid), 0.0)
        assert a == pytest.approx(want, abs=1e-6)
    assert r.scale == pytest.approx(pack.feature(fid)["max_act"])
    with pytest.raises(ExploreError, match="not in this SAE"):
        feature_on_text(model, sae, text, sae.d_sae)


def test_search_hits_sort_by_output_score_and_filter_to_good_steerers():
    from steering_core.browse import SearchHit, arrange_hits

    hits = [SearchHit(1, "a", 0.1, output_score=0.01, steers_well=False),
            SearchHit(2, "b", 0.1, output_score=None, steers_well=None),
            SearchHit(3, "c", 0.1, output_score=0.3, steers_well=True)]
    assert [h.feature_id for h in arrange_hits(hits)] == [1, 2, 3]
    assert [h.feature_id for h in arrange_hits(hits, "output score")] == [3, 1, 2]
    assert [h.feature_id for h in arrange_hits(hits, steers_well_only=True)] == [3]
    with pytest.raises(ExploreError, match="Sort by"):
        arrange_hits(hits, "loudness")


def test_what_fires_here_bad_input(model_and_sae):
    model, sae = model_and_sae
    with pytest.raises(ExploreError, match="Type some text"):
        what_fires_here(model, sae, None, "  \n ")
    with pytest.raises(ExploreError, match="block"):
        what_fires_here(model, sae, sae.layer + 1, "hello")
    with pytest.raises(ExploreError, match="tokens"):
        what_fires_here(model, sae, None, "x" * (model.n_ctx + 5))


# -- neighbourhoods and groups -------------------------------------------------------------------


def test_chance_overlap_of_two_random_lists_matches_a_simulation():
    """The yardstick the Compare tab gives beside an overlap: k²/n shared by two random k-lists."""
    import random

    from steering_core.browse import chance_shared

    rng = random.Random(0)
    sims = [len(set(rng.sample(range(300), 16)) & set(rng.sample(range(300), 16))) for _ in range(20_000)]
    assert chance_shared(16, 300) == pytest.approx(16 * 16 / 300)
    assert chance_shared(16, 300, 4) == pytest.approx(16 * 4 / 300)
    assert sum(sims) / len(sims) == pytest.approx(chance_shared(16, 300), abs=0.03)


def test_jaccard_by_hand():
    assert jaccard([1, 2, 3], [2, 3, 4, 5]) == pytest.approx(2 / 5)
    assert jaccard([], []) == 0.0
    assert jaccard([7], [7]) == 1.0


def test_neighbourhood_overlap_equals_a_hand_computation(pack, feats):
    for fid in range(0, pack.n_features, 7):
        nb = neighbourhoods(pack, fid, k=5)
        cos = [r[0] for r in reference(pack, feats, "cosine", fid)][:5]
        eff = [r[0] for r in reference(pack, feats, "effect_similar", fid)][:5]
        inter = [f for f in cos if f in eff]
        union = len(set(cos) | set(eff))
        assert [r.feature_id for r in nb.cosine] == cos and [r.feature_id for r in nb.effect_similar] == eff
        assert [b.feature_id for b in nb.both] == inter
        assert nb.jaccard == pytest.approx(len(inter) / union if union else 0.0)
        assert {b.feature_id for b in nb.cosine_only} == set(cos) - set(eff)
        assert {b.feature_id for b in nb.effect_only} == set(eff) - set(cos)


def test_grow_from_on_a_hand_graph():
    graph = {0: [(1, 0.9), (2, 0.5)], 1: [(3, 0.8), (2, 0.6)], 2: [(4, 0.7)], 3: [], 4: [(5, 0.1)]}
    got = grow_from(0, lambda m: graph.get(m, []), size=5, per_step=1)
    # step 1: 1 (0.9); step 2: 2 scores 0.5+0.6, beats 3 (0.8); step 3: 3 (0.8) beats 4 (0.7)
    assert [g[0] for g in got] == [0, 1, 2, 3, 4]
    assert got[2][2] == 1 and got[2][3] == pytest.approx(1.1)
    assert [g[0] for g in grow_from(0, lambda m: graph.get(m, []), size=50, per_step=2)] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("kind", ["effect_similar", "cosine"])
def test_grow_group_properties(pack, feats, kind):
    fanout = 5
    for fid in range(0, pack.n_features, 5):
        group = grow_group(pack, fid, kind, size=8, per_step=2, fanout=fanout)
        ids = [m.feature_id for m in group]
        assert ids[0] == fid and group[0].step == 0 and group[0].via is None
        assert len(ids) == len(set(ids))
        # requested size, unless the neighbour graph reachable from fid is smaller
        seen, todo = {fid}, [fid]
        while todo:
            for o, v, _r, _d in reference(pack, feats, kind, todo.pop())[:fanout]:
                if v > 0 and o not in seen:
                    seen.add(o)
                    todo.append(o)
        assert len(ids) == min(8, len(seen))
        for i, m in enumerate(group[1:], start=1):
            earlier = ids[:i]
            assert m.via in earlier
            assert m.feature_id in [r[0] for r in reference(pack, feats, kind, m.via)[:fanout]]
            assert m.label == feats[m.feature_id][0]
        steps = [m.step for m in group]
        assert steps == sorted(steps) and max(steps.count(s) for s in set(steps[1:]) or {0}) <= 2


def test_compare_groups_intersection_and_jaccard(pack):
    cmp = compare_groups(pack, 3, size=6, per_step=2, fanout=5)
    a = [m.feature_id for m in cmp.effect_group]
    b = [m.feature_id for m in cmp.cosine_group]
    assert [x.feature_id for x in cmp.both] == [f for f in a if f in b] and 3 in {x.feature_id for x in cmp.both}
    assert cmp.jaccard == pytest.approx(len(set(a) & set(b)) / len(set(a) | set(b)))
    assert all(x.label for x in cmp.both + cmp.effect_only + cmp.cosine_only)


def test_grow_group_rejects_unknown_kinds(pack):
    with pytest.raises(ExploreError, match="effect_similar or cosine"):
        grow_group(pack, 0, "action")


# -- user labels, notes and the workspace ----------------------------------------------------------


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_labels_and_notes_persist_and_never_touch_the_pack(pack, pack_dir, feats, tmp_path):
    before = _digest(pack_dir / "pack.duckdb")
    db = tmp_path / "user.duckdb"
    f4 = effects_list(pack, 0)[0].feature_id  # a feature that some effect list shows
    f5 = next(f for f in range(pack.n_features) if f not in (f4,))
    with UserNotes(db) as notes:
        notes.set_label(pack, f4, "  my  wedding\nfeature ")
        notes.set_notes(pack, f4, "fires on vows\nsecond line")
        notes.set_label(pack, f5, "five")
        assert effective_label(pack, f4, notes) == "my wedding feature"
        # lists and searches show the user's label
        rows = [r for f in range(pack.n_features) for r in effects_list(pack, f, notes=notes) if r.feature_id == f4]
        assert rows and all(r.label == "my wedding feature" for r in rows)
        assert search_label(pack, "WEDDING", notes=notes)[0].feature_id == f4
    with UserNotes(db) as notes:  # reopened
        n = notes.get(pack, f4)
        assert (n.label, n.notes) == ("my wedding feature", "fires on vows\nsecond line")
        notes.set_label(pack, f4, "   ")  # blank: back to the pack's label, notes kept
        assert effective_label(pack, f4, notes) == feats[f4][0]
        assert notes.get(pack, f4).notes == "fires on vows\nsecond line"
        assert notes.labels(pack) == {f5: "five"}
        with pytest.raises(FeatureLookupError):
            notes.set_label(pack, 99, "nope")
        with pytest.raises(UserNotesError, match="at most"):
            notes.set_label(pack, 6, "x" * 600)
    assert _digest(pack_dir / "pack.duckdb") == before


def test_default_user_db_lives_in_the_cache_dir(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path))
    with UserNotes() as notes:
        assert notes.path == tmp_path / "user.duckdb"
    with pytest.raises(UserNotesError, match="read-only"):
        UserNotes(tmp_path / "pack.duckdb")


def test_effective_label_uses_the_shared_default_store(pack, feats, tmp_path, monkeypatch):
    from steering_core.browse.usernotes import open_user_notes

    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path))
    shared = open_user_notes()
    assert open_user_notes() is shared and shared.path == (tmp_path / "user.duckdb").resolve()
    assert effective_label(pack, 8) == feats[8][0]
    shared.set_label(pack, 8, "eight")
    assert effective_label(pack, 8) == "eight"
    shared.close()
    assert open_user_notes().get(pack, 8).label == "eight"  # reopened after close, still there
    open_user_notes().close()


def test_pack_id_names_the_build(pack):
    m = pack.meta
    assert pack.pack_id == f"{m['model_id']}|{m['hook_point']}|{m['d_sae']}|{m['build_date']}"


def test_workspace_round_trip(pack, tmp_path):
    with UserNotes(tmp_path / "a.duckdb") as a:
        a.set_label(pack, 1, "one")
        a.set_notes(pack, 2, "two's notes ✓")
        ws = Workspace.capture(pack, a, pinned=[3, 1, 3])
        text = ws.to_json()
    back = Workspace.from_json(text, pack)
    assert back == ws and back.pinned == [3, 1]
    with UserNotes(tmp_path / "b.duckdb") as b:
        back.apply(pack, b)
        assert Workspace.capture(pack, b, pinned=[3, 1]) == ws


BAD_WORKSPACES = {
    "not json": "{pinned: [1]",
    "not an object": "[1, 2]",
    "unknown id pinned": '{"pinned": [40]}',
    "negative id": '{"pinned": [-1]}',
    "string id": '{"pinned": ["3"]}',
    "float id": '{"pinned": [3.5]}',
    "bool id": '{"pinned": [true]}',
    "pinned not a list": '{"pinned": 3}',
    "unknown id label": '{"labels": {"400": "x"}}',
    "non-numeric key": '{"labels": {"abc": "x"}}',
    "label not text": '{"labels": {"3": 5}}',
    "notes not a map": '{"notes": ["x"]}',
    "label too long": json.dumps({"labels": {"3": "x" * 600}}),
    "other pack": '{"pack_id": "someone-else|blocks.0|9|2020", "labels": {"3": "x"}}',
    "unknown field": '{"pinned": [], "colour": "red"}',
    "newer version": '{"version": 99}',
    "too big": json.dumps({"notes": {"1": "x" * 20_000}, "pad": "y" * 1_100_000}),
    "not utf-8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("case", list(BAD_WORKSPACES))
def test_bad_workspace_files_are_refused_whole(pack, tmp_path, case):
    with UserNotes(tmp_path / "u.duckdb") as notes:
        notes.set_label(pack, 1, "kept")
        doc = BAD_WORKSPACES[case]
        if case != "too big" and case != "not utf-8":  # a good label next to the bad entry must not land
            d = json.loads(doc) if doc.startswith("{") and case != "not json" else None
            if isinstance(d, dict) and "labels" not in d:
                d["labels"] = {"2": "should not be saved"}
                doc = json.dumps(d)
        with pytest.raises(UserNotesError) as info:
            Workspace.from_json(doc, pack).apply(pack, notes)
        assert len(str(info.value)) > 15
        assert notes.labels(pack) == {1: "kept"}


def test_workspace_apply_is_all_or_nothing(pack, tmp_path):
    with UserNotes(tmp_path / "u.duckdb") as notes:
        ws = Workspace(labels={1: "fine", 2: "fine too", 400: "bad id"}, pack_id=pack.pack_id)
        with pytest.raises(SteeringCoreError):
            ws.apply(pack, notes)
        assert notes.labels(pack) == {}


# -- bad ids, empty packs, export ------------------------------------------------------------------


@pytest.mark.parametrize("fn", [*LISTS.values(), neighbourhoods, search_id,
                                lambda p, f: grow_group(p, f, "cosine"), compare_groups])
@pytest.mark.parametrize("bad", [-1, 40, 10**12, "abc", "", "3.5", True, None])
def test_bad_ids_get_a_sentence(pack, fn, bad):
    with pytest.raises(SteeringCoreError) as info:
        fn(pack, bad)
    msg = str(info.value)
    assert "0 to 39" in msg or "Type a feature id" in msg


def test_empty_pack_gets_a_sentence(tmp_path):
    con = connect(tmp_path / "pack.duckdb")
    ensure_schema(con)
    con.close()
    p = FeaturePack(tmp_path)
    try:
        for fn in LISTS.values():
            with pytest.raises(FeatureLookupError, match="no features"):
                fn(p, 0)
        assert search_label(p, "anything") == []
        with pytest.raises(ExploreError, match="no label embeddings"):
            semantic_search(p, "weddings")
    finally:
        p.close()


def test_export_csv_and_json_round_trip(pack):
    rows = effects_list(pack, 0, k=5) + [ListRow(99, -0.5, None, "=HYPERLINK(\"x\")", None, True)]
    back = list(csv.DictReader(io.StringIO(rows_to_csv(rows))))
    assert [int(r["feature_id"]) for r in back] == [r.feature_id for r in rows]
    assert [float(r["value"]) for r in back] == pytest.approx([r.value for r in rows])
    assert back[-1]["label"].startswith("'=") and back[-1]["rel_value"] == "" and back[-1]["predicted"] == "True"
    assert json.loads(rows_to_json(rows)) == [dataclasses.asdict(r) for r in rows]
    assert rows_to_csv([]).strip() == "feature_id,value,rel_value,label,density,predicted,se,hub"
    assert all(r["se"] for r in back[:-1]) and back[-1]["se"] == ""  # measured rows carry their SE
    assert json.loads(rows_to_json([])) == []


def test_lists_are_safe_from_several_threads(pack):
    serial = [effects_list(pack, f) + cosine_list(pack, f) for f in range(pack.n_features)]
    with ThreadPoolExecutor(4) as ex:
        threaded = list(ex.map(lambda f: effects_list(pack, f) + cosine_list(pack, f), range(pack.n_features)))
    assert threaded == serial


# -- standard errors, the specific basis and hubs (issue 14) --------------------------------------


def test_effect_lists_carry_se_and_hubs_and_the_specific_basis_is_stored_specific(pack):
    hubs = {t for (t,) in pack.con.execute("SELECT target_feature FROM generic_response WHERE hub").fetchall()}
    for fid in range(pack.n_features):
        raw = effects_list(pack, fid, k=64)
        want = pack.con.execute("SELECT target_feature, effect, effect_se FROM feature_effects WHERE source_feature = ? "
                                "AND rank IS NOT NULL ORDER BY rank", [fid]).fetchall()
        assert [(r.feature_id, r.value, r.se) for r in raw] == [(t, pytest.approx(e), pytest.approx(s))
                                                                  for t, e, s in want]
        assert all(r.hub == (r.feature_id in hubs) for r in raw)
        spec = effects_list(pack, fid, ListFilter(basis="specific"), k=64)
        want = pack.con.execute("SELECT target_feature, specific, specific_se FROM feature_effects "
                                "WHERE source_feature = ? AND rank_specific IS NOT NULL ORDER BY rank_specific",
                                [fid]).fetchall()
        assert [(r.feature_id, r.value, r.se) for r in spec] == [(t, pytest.approx(e), pytest.approx(s))
                                                                   for t, e, s in want]
        assert [abs(r.value) for r in spec] == sorted((abs(r.value) for r in spec), reverse=True)


def test_hide_hubs_drops_exactly_the_hub_targets(pack):
    """Hubs answer to random directions with a direction-dependent sign, so the specific view keeps
    them; the filter removes exactly them, in both bases, and in predicted lists too."""
    hubs = {t for (t,) in pack.con.execute("SELECT target_feature FROM generic_response WHERE hub").fetchall()}
    assert hubs, "the tiny pack should have hub targets for this test to mean anything"
    seen_hub = False
    for fid in range(pack.n_features):
        for basis in ("raw", "specific"):
            every = effects_list(pack, fid, ListFilter(basis=basis), k=64)
            kept = effects_list(pack, fid, ListFilter(basis=basis, hide_hubs=True), k=64)
            seen_hub |= any(r.hub for r in every)
            assert [r.feature_id for r in kept] == [r.feature_id for r in every if r.feature_id not in hubs]
    assert seen_hub
    with pytest.raises(ExploreError, match="hide_hubs"):
        ListFilter(hide_hubs="yes")


def test_hide_noise_drops_exactly_the_rows_within_two_se(pack):
    fid = 0
    every = effects_list(pack, fid, k=64)
    kept = effects_list(pack, fid, ListFilter(hide_noise=True), k=64)
    assert [r.feature_id for r in kept] == [r.feature_id for r in every if not abs(r.value) < 2 * r.se]
    assert all(not r.within_noise for r in kept)
    acts = actions_list(pack, fid, ListFilter(basis="specific"), k=64)
    assert all(r.se is not None and r.se >= 0 for r in acts)
    with pytest.raises(ExploreError, match="basis"):
        ListFilter(basis="generic")


def test_baseline_activation_carries_its_standard_error(pack, pack_dir, feats, tmp_path):
    """The card's baseline activation is the mean of the rollouts the pack kept, with the
    within-prompt SE computed here by hand (numpy); a pack without its rollouts gives no ±."""
    rows = np.load(pack_dir / "baseline_rows.npy").astype(np.float64)
    n_prompts = len(json.loads(pack.meta["effects_rollouts"])["prompts"])
    per = rows.shape[0] // n_prompts
    for fid in (0, 3, pack.n_features - 1):
        got = baseline_activation(pack, fid)
        by_prompt = rows[:, fid].reshape(n_prompts, per)
        se = np.sqrt(by_prompt.var(1, ddof=1).sum() / per) / n_prompts
        assert got.value == pytest.approx(feats[fid][2], rel=1e-6)
        assert got.value == pytest.approx(rows[:, fid].mean(), rel=1e-5, abs=1e-7)
        assert got.se == pytest.approx(se, rel=1e-5, abs=1e-9) and got.rollouts == rows.shape[0]
    with pytest.raises(FeatureLookupError):
        baseline_activation(pack, pack.n_features)
    older = tmp_path / "older"
    shutil.copytree(pack_dir, older)
    (older / "baseline_rows.npy").unlink()
    p = FeaturePack(older)
    try:
        got = baseline_activation(p, 3)
        assert got.value == pytest.approx(feats[3][2], rel=1e-6) and got.se is None and got.rollouts is None
    finally:
        p.close()
