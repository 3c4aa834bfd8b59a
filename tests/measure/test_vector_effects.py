""""What does this vector do?" on the tiny pack: cosine, predicted and measured effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steering_core import load_model
from steering_core.measure.vector_effects import (
    EffectCache,
    VectorEffectsError,
    cosine_rows,
    effect_rows,
    measure,
    predicted,
)
from steering_core.model.saes import load_sae_from_disk
from steering_core.pack.reader import FeaturePack


@pytest.fixture(scope="module")
def env(tiny_pack_build, one_thread):
    pack = FeaturePack(tiny_pack_build / "pack")
    model = load_model("tiny")
    sae = load_sae_from_disk(pack.sae_dir, model)
    yield pack, model, sae
    pack.close()


def _measured_feature(pack):
    return pack.con.execute("SELECT feature_id, alpha FROM features WHERE measured ORDER BY feature_id LIMIT 1").fetchone()


def test_a_decoder_row_is_most_cosine_similar_to_its_own_feature(env):
    pack, _, _ = env
    fid, _ = _measured_feature(pack)
    rows = cosine_rows(pack, torch.from_numpy(pack.decoder_row(fid)) * 3.0, k=5)
    assert rows[0].feature_id == fid and rows[0].value == pytest.approx(1.0, abs=1e-5)
    assert [r.value for r in rows] == sorted((r.value for r in rows), reverse=True)


def test_predicted_effects_are_the_approximator_on_the_unit_vector(env):
    pack, _, _ = env
    v = torch.randn(pack.decoder_matrix().shape[1], generator=torch.Generator().manual_seed(0))
    got = predicted(pack, 5 * v)
    approx = pack.approximator()
    ref = (v / v.norm()) @ approx.M + approx.b
    assert np.allclose(got, ref.numpy(), atol=1e-5)
    rows = effect_rows(pack, got, k=6, is_predicted=True)
    assert all(r.predicted for r in rows) and len(rows) == 6
    assert [abs(r.value) for r in rows] == sorted((abs(r.value) for r in rows), reverse=True)


def test_measuring_a_features_decoder_row_reproduces_the_packs_effects(env):
    pack, model, sae = env
    fid, alpha = _measured_feature(pack)
    m = measure(model, sae, pack, torch.from_numpy(pack.decoder_row(fid)), layer=1, alpha=alpha, seed=0)
    stored = {e.feature_id: e.value for e in pack.effects(fid, k=8)}
    for target, eff in stored.items():
        assert m.effects[target] == pytest.approx(eff, abs=1e-4)
    rows = effect_rows(pack, m.effects, k=8)
    assert not any(r.predicted for r in rows)
    assert {r.feature_id for r in rows} == set(stored)


def test_measurement_is_cached_by_vector_alpha_and_seed(env, tmp_path):
    pack, model, sae = env
    cache = EffectCache(tmp_path / "lib.duckdb")
    v = torch.from_numpy(pack.decoder_row(0))
    a = measure(model, sae, pack, v, layer=1, alpha=2.0, cache=cache)
    b = measure(model, sae, pack, v, layer=1, alpha=2.0, cache=cache)
    assert not a.from_cache and b.from_cache and np.allclose(a.effects, b.effects, atol=1e-6)
    c = measure(model, sae, pack, v, layer=1, alpha=3.0, cache=cache)
    assert not c.from_cache
    auto = measure(model, sae, pack, v, layer=1, alpha=None, cache=cache)
    assert auto.alpha > 0 and auto.dce is not None
    cache.close()
    # survives a reopen
    again = EffectCache(tmp_path / "lib.duckdb")
    assert measure(model, sae, pack, v, layer=1, alpha=2.0, cache=again).from_cache
    again.close()


def test_a_measurement_cancelled_from_its_progress_callback_caches_nothing(env, tmp_path):
    """The page's Stop button interrupts at a progress update: the hooks come off, nothing is
    cached, and the next measurement equals an uncancelled one."""
    from steering_core.model.hooks import installed_hook_count

    pack, model, sae = env
    cache = EffectCache(tmp_path / "lib.duckdb")
    v = torch.from_numpy(pack.decoder_row(0))
    seen = []

    class Stop(Exception):
        pass

    def progress(done, total):
        seen.append((done, total))
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        measure(model, sae, pack, v, layer=1, alpha=2.0, cache=cache, on_progress=progress)
    assert seen[:4] == [(0, seen[0][1]), (1, seen[0][1]), (2, seen[0][1]), (3, seen[0][1])]
    assert installed_hook_count(model) == 0
    assert cache.con.execute("SELECT count(*) FROM vector_effect_cache").fetchone()[0] == 0
    full = []
    m = measure(model, sae, pack, v, layer=1, alpha=2.0, cache=cache, on_progress=lambda d, t: full.append((d, t)))
    assert full[-1][0] == full[-1][1]  # the bar reaches its end
    assert np.allclose(m.effects, measure(model, sae, pack, v, layer=1, alpha=2.0).effects, atol=1e-6)
    assert [d for d, _ in full] == list(range(full[-1][1] + 1))  # every step once, in order

    # with the automatic α, Stop also works inside the α search, before any decoding
    searching = []

    def stop_in_search(done, total):
        searching.append(done)
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        measure(model, sae, pack, v, layer=1, cache=cache, on_progress=stop_in_search)
    assert searching == [0, 1, 2] and installed_hook_count(model) == 0
    assert cache.con.execute("SELECT count(*) FROM vector_effect_cache").fetchone()[0] == 1  # only the α=2 one
    auto = []
    measure(model, sae, pack, v, layer=1, on_progress=lambda d, t: auto.append((d, t)))
    assert auto[0] == (0, auto[0][1]) and auto[-1] == (auto[-1][1], auto[-1][1])
    assert [d for d, _ in auto] == sorted(set(d for d, _ in auto))  # never backwards, never repeated
    cache.close()


def test_bad_vectors_get_a_sentence(env):
    pack, model, sae = env
    d = pack.decoder_matrix().shape[1]
    with pytest.raises(VectorEffectsError, match="dimensions"):
        cosine_rows(pack, torch.ones(d + 1))
    with pytest.raises(VectorEffectsError, match="zero"):
        predicted(pack, torch.zeros(d))
    bad = torch.ones(d)
    bad[0] = float("nan")
    with pytest.raises(VectorEffectsError, match="NaN"):
        predicted(pack, bad)
    with pytest.raises(VectorEffectsError, match="block 2"):
        measure(model, sae, pack, torch.ones(d), layer=2, alpha=1.0)
    with pytest.raises(VectorEffectsError, match="finite"):
        measure(model, sae, pack, torch.ones(d), layer=1, alpha=float("inf"))


def test_the_shipped_twins_are_used_only_in_their_own_precision(env, tiny_pack_build, tmp_path, monkeypatch):
    """Library audit: a bf16 pack's twin rows read on an fp32-only CPU gave a vector at α = 0
    nonzero effects on 2,865 of 3,072 features; the twins must come from the same precision."""
    import shutil

    from steering_core.measure.effects import baseline_rows
    from steering_core.measure.vector_effects import effect_spec_of, twin_baseline

    _, model, sae = env
    shutil.copytree(tiny_pack_build / "pack", tmp_path / "pack")
    planted = np.load(tmp_path / "pack" / "baseline_rows.npy") + 1.0  # proves which rows are read
    np.save(tmp_path / "pack" / "baseline_rows.npy", planted)
    pack = FeaturePack(tmp_path / "pack")
    try:
        spec = effect_spec_of(pack)
        assert pack.meta["precision"] == "fp32"
        assert np.array_equal(twin_baseline(model, sae, pack, 1, spec, 0).numpy(), planted)  # same precision
        monkeypatch.setitem(pack.meta, "precision", "bf16")
        own = twin_baseline(model, sae, pack, 1, spec, 0)
        assert torch.equal(own, baseline_rows(model, sae, 1, spec, 0))  # measured here, not the shipped rows
        m = measure(model, sae, pack, torch.ones(model.d_model), layer=1, alpha=0.0, seed=0)
        assert np.count_nonzero(m.effects) == 0  # and a vector at α = 0 is exactly no effect
    finally:
        pack.close()


def test_the_cache_key_follows_the_loss_target_and_the_precision(env):
    from steering_core.measure.vector_effects import cache_key, effect_spec_of

    pack, model, _ = env
    v, spec = torch.ones(model.d_model), effect_spec_of(pack)
    keys = {cache_key(pack, v, 1, None, 0, spec, 0.5, "fp32"), cache_key(pack, v, 1, None, 0, spec, 2.0, "fp32"),
            cache_key(pack, v, 1, None, 0, spec, 0.5, "bf16")}
    assert len(keys) == 3
    # a given α does not depend on the target
    assert cache_key(pack, v, 1, 3.0, 0, spec, 0.5, "fp32") == cache_key(pack, v, 1, 3.0, 0, spec, 2.0, "fp32")


def test_the_predicted_list_says_how_well_the_approximator_predicts(env):
    """A predicted list sits beside a measured one: it must say, in the pack's own held-out figure,
    how much of a measured list it explains, and that it has no error bars."""
    from steering_core.measure.vector_effects import prediction_note

    pack, _, _ = env
    r2 = pack.meta_json("approximator_r2_heldout")
    se = pack.meta_json("approximator_r2_heldout_se")
    note = prediction_note(pack)
    assert f"(R² {r2:.2f} ± {se:.2f})" in note and f"explains {max(r2, 0):.0%}" in note
    assert "No error bars on its predictions" in note
    assert f"{int(pack.meta['approximator_pairs']):,} features" in note

    class Old:  # a pack from before the approximator recorded its fit
        meta: dict = {}

        def meta_json(self, key, default=None):
            return default

    assert "does not say how well it predicts" in prediction_note(Old())
