"""The steering-clear toy world: dataset, MLP, steering task, adapters and curves (small and fast)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from steering_core.measure.scores import mean_and_se, wilson_interval
from steering_core.toyworld import (
    CurveConfig,
    EditMethod,
    SteeringTask,
    ToyWorldError,
    TrainConfig,
    WorldConfig,
    example_counts,
    fit_edit,
    load_json,
    make_dataset,
    make_split,
    make_world,
    run_curves,
    steered_accuracy,
    steering_methods,
    train_mlp,
)
from steering_core.toyworld.__main__ import main
from steering_core.toyworld.adapt import edit_from_fit
from steering_core.toyworld.curves import repeat_split
from steering_core.toyworld.data import N_VALUES, with_value
from steering_core.toyworld.mlp import ToyMLP, TrainReport, evaluate, per_sample_accuracy
from steering_core.toyworld.steer import pair_activations, space_of
from steering_core.vectors.methods import METHODS, FitResult, Method


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matrices on a busy machine: one thread is faster than two fighting for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(one_thread):
    torch.manual_seed(0)
    world = make_world(WorldConfig(m=6, seed=3))
    return train_mlp(world, TrainConfig(n_samples=4000, epochs=10, seed=1))


# -- dataset -------------------------------------------------------------------------------------


def test_dataset_matches_its_specification():
    world = make_world(WorldConfig(m=200, seed=5))
    assert world.anchors.shape == (200, 8, 8)
    assert abs(float(world.anchors.mean())) < 0.05 and abs(float(world.anchors.std()) - 1.0) < 0.05
    x, y = make_dataset(world, 300, seed=9)
    assert x.shape == (300, 200 * 8) and y.shape == (300, 200) and y.dtype == torch.long
    assert int(y.min()) >= 0 and int(y.max()) <= 7
    noise = x.view(300, 200, 8) - world.anchors[torch.arange(200), y]
    assert abs(float(noise.std()) - 0.1) < 0.005 and abs(float(noise.mean())) < 0.005
    # every value shows up, roughly uniformly
    counts = torch.bincount(y.flatten(), minlength=8).float() / y.numel()
    assert float((counts - 1 / 8).abs().max()) < 0.01


def test_dataset_is_deterministic_given_its_seed():
    a, b = make_world(WorldConfig(m=4, seed=1)), make_world(WorldConfig(m=4, seed=1))
    assert torch.equal(a.anchors, b.anchors)
    assert not torch.equal(a.anchors, make_world(WorldConfig(m=4, seed=2)).anchors)
    x1, y1 = make_dataset(a, 50, seed=3)
    x2, y2 = make_dataset(b, 50, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, make_dataset(a, 50, seed=4)[0])


def test_a_positive_twin_differs_in_the_steered_attribute_only():
    world = make_world(WorldConfig(m=5, seed=0))
    x, _ = make_dataset(world, 20, seed=0)
    pos = with_value(world, x, 2, 0, torch.Generator().manual_seed(1))
    diff = (pos - x).abs().view(20, 5, 8).sum(-1)
    assert float(diff[:, [0, 1, 3, 4]].max()) == 0.0 and bool((diff[:, 2] > 0).all())
    assert float((pos.view(20, 5, 8)[:, 2] - world.anchors[2, 0]).abs().max()) < 0.6


def test_a_split_keeps_test_inputs_off_the_target():
    world = make_world(WorldConfig(m=5, seed=0))
    split = make_split(world, SteeringTask(attribute=1, layer=0, target=0), pool=64, n_test=100, seed=2, n_val=30)
    assert split.neg.shape == split.pos.shape == (64, 40) and split.val_x.shape == (30, 40)
    assert bool((split.test_y[:, 1] != 0).all()) and bool((split.val_y[:, 1] != 0).all())


# -- the MLP ---------------------------------------------------------------------------------------


def test_the_mlp_reaches_95_percent_attribute_accuracy_on_held_out_data(trained):
    x, y = make_dataset(trained.world, 2000, seed=12345)
    _, acc = evaluate(trained.model, x, y)
    assert acc >= 0.95
    assert trained.report.accuracy >= 0.95
    assert [b.up.out_features for b in trained.model.blocks] == [512, 512, 256, 512]
    h = trained.model.residual(x[:8], 1)
    assert torch.allclose(trained.model.readout(h, 1), trained.model(x[:8]), atol=1e-5)


def test_the_accuracy_se_is_over_samples_not_labels():
    # a sample's attributes share one input: 4 samples reading 1, 1, 0.5 and 0 of their 2 attributes
    # right give an SE over 4 samples, not over 8 labels
    trained_like = ToyMLP(2)  # a model whose readout is replaced: its predictions are planted
    y = torch.zeros(4, 2, dtype=torch.long)
    planted = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 1]])  # right on 2, 2, 1 and 0 attributes
    trained_like.forward = lambda x: torch.nn.functional.one_hot(planted[: x.shape[0]], N_VALUES).float()
    _, shares = per_sample_accuracy(trained_like, torch.zeros(4, 16), y)
    mean, sd = 0.625, math.sqrt(((0.375 ** 2) * 2 + 0.125 ** 2 + 0.625 ** 2) / 3)
    assert mean_and_se(shares.numpy())[1] == pytest.approx(sd / 2)
    assert float(shares.mean()) == mean
    assert math.isnan(mean_and_se(shares[:1].numpy())[1])


def test_training_reports_the_kept_epochs_accuracy_and_its_se(trained):
    r = trained.report
    assert len(r.val_accuracy_se) == len(r.val_accuracy)
    assert r.accuracy_se == r.val_accuracy_se[r.best_epoch]
    assert 0 <= r.accuracy_se < 0.05 and r.val_samples == 800
    assert f"{r.val_samples:,} held-out samples" in r.accuracy_text()


def test_a_perfect_accuracy_reads_as_a_bound_not_as_plus_minus_zero():
    r = TrainReport(val_accuracy=[1.0], val_accuracy_se=[0.0], val_samples=800, best_epoch=0)
    text = r.accuracy_text()
    assert "±" not in text and "all 800 held-out samples" in text
    assert f"{wilson_interval(800, 800)[0]:.2%}" in text and wilson_interval(800, 800)[0] < 1
    r = TrainReport(val_accuracy=[0.9], val_accuracy_se=[0.01], val_samples=800, best_epoch=0)
    assert r.accuracy_text() == "90.00% of attributes right on 800 held-out samples (± 1.00%, SE over samples)"


# -- steering --------------------------------------------------------------------------------------


def test_caa_steers_the_target_attribute_above_chance_with_64_examples(trained):
    split = make_split(trained.world, SteeringTask(attribute=2, layer=2), pool=64, n_test=500, seed=7)
    pos, neg = pair_activations(trained.model, split, 64)
    base = steered_accuracy(trained.model, split, None)
    steered = steered_accuracy(trained.model, split, fit_edit("caa", pos, neg, space_of(trained.model), 2).edit)
    assert base.target_accuracy < 0.05
    assert steered.target_accuracy > 0.25 > 1 / 8
    assert steered.kept_accuracy > 0.9


def test_edits_go_through_the_operator_registry_exactly():
    from steering_core.toyworld.adapt import ActivationSpace

    g = torch.Generator().manual_seed(0)
    space, a = ActivationSpace(n_layers=4, d_model=16), torch.randn(10, 16, generator=g)
    r, a0 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    add = edit_from_fit(FitResult("caa", r), space, 1, alpha=2.0)
    assert torch.allclose(add(a), a + 2.0 * r, atol=1e-6)
    ace = edit_from_fit(FitResult("ace", r, operator="ace", reference=a0), space, 1, alpha=0.5)
    u = r / r.norm()
    want = a - (a @ u)[:, None] * u + (a0 @ u) * u + 0.5 * r
    assert torch.allclose(ace(a), want, atol=1e-5)


def test_a_fit_that_carries_a_callable_edit_is_applied_as_such():
    from steering_core.toyworld.adapt import ActivationSpace

    space, a = ActivationSpace(n_layers=4, d_model=8), torch.randn(5, 8)
    f = lambda h: 0.5 * h + 1.0  # an adaptor a ← f(a), not a vector
    res = FitResult("loreft_like", torch.ones(8), operator="no-such-operator", info={"edit": f})
    assert torch.allclose(edit_from_fit(res, space, 0)(a), f(a))
    assert torch.allclose(edit_from_fit(res, space, 0, alpha=0.5)(a), a + 0.5 * (f(a) - a))


def test_a_newly_registered_pair_method_is_picked_up(trained, monkeypatch):
    assert {"caa", "ace", "probe", "pca_diff", "pca_center"} <= set(steering_methods())
    assert "sae_features" not in steering_methods() and "sae_combo" not in steering_methods()

    def trained_adaptor(pos, neg, ctx):
        shift = (pos - neg).mean(0)
        return FitResult("toy_adaptor", shift, operator="toy_adaptor", info={"edit": lambda h: h + 2 * shift})

    monkeypatch.setitem(METHODS, "toy_adaptor", Method("toy_adaptor", "Toy adaptor", trained_adaptor, min_pairs=2))
    monkeypatch.setitem(METHODS, "needs_lm", Method("needs_lm", "LM only", trained_adaptor, needs_sae=True))
    assert "toy_adaptor" in steering_methods() and "needs_lm" not in steering_methods()
    res = run_curves(trained, CurveConfig(layer=2, methods=("toy_adaptor", "caa"), ns=(4, 16), repeats=1, n_test=100,
                                          n_val=0))
    assert res.methods == ["toy_adaptor", "caa"] and res.mean("toy_adaptor")[-1] > 0.5


@pytest.mark.skipif(not {"loreft", "lorest"} <= set(METHODS), reason="LoReFT / LoReST are not registered")
def test_lorest_is_no_worse_than_loreft_with_4_to_16_examples(trained):
    from steering_core.vectors.methods import FitContext
    from steering_core.vectors.trained import LoreftConfig, LorestConfig

    assert {"loreft", "lorest"} <= set(steering_methods())
    fast = {"loreft": FitContext(training=LoreftConfig(steps=100)),
            "lorest": FitContext(training=LorestConfig(steps=100))}
    res = run_curves(trained, CurveConfig(layer=2, methods=("loreft", "lorest"), ns=(4, 8, 16), repeats=3, n_test=200,
                                          n_val=0, contexts=fast))
    assert not res.notes
    for ft, st in zip(res.mean("loreft"), res.mean("lorest")):
        assert st >= ft - 0.05
    with pytest.raises(ToyWorldError, match="Settings were given for probe"):
        run_curves(trained, CurveConfig(methods=("caa",), ns=(4,), repeats=1, contexts={"probe": FitContext()}))


# -- curves ----------------------------------------------------------------------------------------


def test_curves_have_one_row_per_repeat_and_one_column_per_count(trained, tmp_path):
    cfg = CurveConfig(layer=1, methods=("caa", "ace", "probe"), ns=(4, 8, 16), repeats=2, n_test=80, n_val=40,
                      alphas=(1.0, 2.0))
    res = run_curves(trained, cfg)
    assert res.ns == [4, 8, 16] and res.methods == ["caa", "ace", "probe"]
    for m in res.methods:
        assert len(res.target[m]) == 2 and all(len(row) == 3 for row in res.target[m])
        assert len(res.mean(m)) == len(res.std(m)) == 3
        assert all(0.0 <= v <= 1.0 for row in res.target[m] for v in row)
        assert all(a in (1.0, 2.0) for row in res.alpha[m] for a in row)
    assert len(res.baseline) == len(res.attributes) == 2 and not res.notes
    back = load_json(res.save_json(tmp_path / "c.json"))
    assert back.target == res.target and back.mean("caa") == res.mean("caa")
    assert example_counts(4096) == [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def test_a_single_repeat_has_an_unknown_spread_not_zero(trained, tmp_path):
    res = run_curves(trained, CurveConfig(layer=1, methods=("caa",), ns=(4, 8), repeats=1, n_test=40, n_val=0))
    assert all(math.isnan(v) for v in res.std("caa")) and all(math.isfinite(v) for v in res.mean("caa"))
    saved = json.loads(res.save_json(tmp_path / "one.json").read_text())
    assert saved["summary"]["caa"]["std"] == [None, None]  # unknown, not a measured 0


def test_a_point_that_cannot_be_fitted_is_missing_not_fatal(trained, tmp_path):
    def picky(pos, neg):
        if pos.shape[0] < 8:
            raise ToyWorldError("picky needs 8 pairs.")
        return lambda h: h

    res = run_curves(trained, CurveConfig(methods=(EditMethod("picky", picky),), ns=(4, 8), repeats=1, n_test=20))
    assert math.isnan(res.target["picky"][0][0]) and res.target["picky"][0][1] == 0.0
    assert res.notes == ["repeat 0, n = 4, picky: picky needs 8 pairs."]
    saved = json.loads(res.save_json(tmp_path / "p.json").read_text())
    assert saved["target"]["picky"][0][0] is None and saved["summary"]["picky"]["mean"][0] is None
    assert math.isnan(load_json(tmp_path / "p.json").mean("picky")[0])


def test_curves_never_fit_on_evaluation_examples(trained):
    seen: list[torch.Tensor] = []

    def spy_fit(pos, neg):
        seen.extend([pos, neg])
        return lambda h: h

    cfg = CurveConfig(layer=2, methods=(EditMethod("spy", spy_fit), "caa"), ns=(4, 32), repeats=2, n_test=60,
                      n_val=20, alphas=(1.0, 3.0))
    run_curves(trained, cfg)
    fitted = torch.cat(seen)
    for r in range(2):
        split = repeat_split(trained, cfg, r)
        held_out = trained.model.residual(torch.cat([split.test_x, split.val_x]), 2)
        assert float(torch.cdist(fitted, held_out).min()) > 1e-3
        pos, neg = pair_activations(trained.model, split, 32)
        assert torch.equal(seen[4 * r + 2], pos) and torch.equal(seen[4 * r + 3], neg)


# -- bad input -------------------------------------------------------------------------------------


def test_bad_input_gets_a_sentence(trained):
    with pytest.raises(ToyWorldError, match="at least one attribute"):
        WorldConfig(m=0)
    with pytest.raises(ToyWorldError, match="only 4,096 are available"):
        CurveConfig(ns=(4, 8192), pool=4096)
    split = make_split(trained.world, SteeringTask(attribute=0, layer=0), pool=16, n_test=10, seed=0)
    with pytest.raises(ToyWorldError, match="32 steering examples were asked for but only 16"):
        pair_activations(trained.model, split, 32)
    with pytest.raises(ToyWorldError, match="Unknown method 'nope'"):
        run_curves(trained, CurveConfig(methods=("nope",), ns=(4,), repeats=1))
    with pytest.raises(ToyWorldError, match="needs more than activation pairs"):
        run_curves(trained, CurveConfig(methods=("sae_features",), ns=(4,), repeats=1))
    with pytest.raises(ToyWorldError, match="Layer 7 does not exist"):
        run_curves(trained, CurveConfig(layer=7, methods=("caa",), ns=(4,), repeats=1))
    with pytest.raises(ToyWorldError, match="Attribute 9 does not exist"):
        run_curves(trained, CurveConfig(attribute=9, methods=("caa",), ns=(4,), repeats=1))
    with pytest.raises(ToyWorldError, match="needs at least 4 steering examples"):
        run_curves(trained, CurveConfig(methods=("probe",), ns=(2, 4), repeats=1))


def test_the_command_line_refuses_bad_settings_in_a_sentence(capsys):
    assert main(["--m", "0"]) == 2
    assert "at least one attribute" in capsys.readouterr().err
    assert main(["--m", "3", "--methods", "caa,nope", "--train-samples", "100"]) == 2
    assert "Unknown method 'nope'" in capsys.readouterr().err


def test_the_command_line_prints_json_lines_and_saves_curves(tmp_path, capsys):
    out_json, out_png = tmp_path / "curves.json", tmp_path / "curves.png"
    rc = main(["--m", "3", "--methods", "caa,ace", "--repeats", "1", "--max-examples", "8", "--n-test", "50",
               "--train-samples", "1500", "--epochs", "3", "--json", str(out_json), "--figure", str(out_png)])
    assert rc == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    events = {d["event"] for d in lines}
    assert {"model", "point", "summary", "done"} <= events
    assert sum(d["event"] == "point" for d in lines) == 2 * 2
    saved = json.loads(out_json.read_text())
    assert saved["ns"] == [4, 8] and set(saved["summary"]) == {"caa", "ace"}
    assert out_png.stat().st_size > 1000
    assert all(math.isfinite(v) for v in saved["summary"]["caa"]["mean"])
