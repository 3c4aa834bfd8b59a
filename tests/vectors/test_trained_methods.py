"""LoReFT, LoReST and BiPO: the formulas, the training promises (orthonormality, seed, progress,
stop, divergence, too little data) and the one steering path they share with every vector."""

from __future__ import annotations

import threading

import pytest
import torch

from steering_core import record_residuals, steering
from steering_core.datasets import ContrastiveDataset, Pair
from steering_core.model.operators import get_operator, operator_names, operator_term, unregister_operator
from steering_core.vectors import (
    SteeringVector,
    VectorError,
    combine,
    export_gguf,
    from_safetensors_bytes,
    to_safetensors_bytes,
)
from steering_core.vectors.fitting import FitRequest, fit_dataset
from steering_core.vectors.methods import METHODS, FitContext, FitError, available, fit
from steering_core.vectors.trained import (
    Adaptor,
    BipoConfig,
    LoreftConfig,
    LorestConfig,
    TrainingError,
    TrainingStopped,
    adaptor_term,
    train_bipo,
    train_loreft,
    train_lorest,
)
from steering_core.vectors.trained.bipo import completion_logprobs, preference_pairs
from steering_core.vectors.trained.loop import TrainConfig, run_steps

PROMPTS = ["hello world", "a much longer prompt than the first", "x"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: extra threads only spin on a busy CPU


def planted(n=64, d=16, seed=0):
    """Positives are the negatives with their component along u set to 3 (what LoReFT r=1 can express)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    neg = torch.randn(n, d, generator=g)
    pos = neg - (neg @ u).unsqueeze(1) * u + 3.0 * u
    return pos, neg, u


def _eye_error(m: torch.Tensor) -> float:
    return float((m - torch.eye(m.shape[0])).abs().max())


# -- the formulas --------------------------------------------------------------------------------


def test_loreft_keeps_R_orthonormal_and_learns_the_map():
    pos, neg, u = planted()
    ad = train_loreft(pos, neg, LoreftConfig(rank=3, steps=200))
    R = ad.params["R"]
    assert R.shape == (3, 16) and _eye_error(R @ R.T) < 1e-5
    assert ad.config["loss"] < 0.05 * ad.config["loss_start"]
    assert torch.allclose(ad(neg), pos, atol=0.2 * float((pos - neg).norm(dim=1).mean()))


def test_lorest_keeps_Q_orthonormal_and_gates_are_zero_or_one():
    pos, neg, _ = planted()
    ad = train_lorest(pos, neg, LorestConfig(rank=3, steps=200))
    Q = ad.params["Q"]
    assert Q.shape == (16, 3) and _eye_error(Q.T @ Q) < 1e-5
    assert set(ad.params["p"].tolist()) <= {0.0, 1.0} and len(ad.config["logits"]) == 3
    assert ad.config["loss"] < ad.config["loss_start"]


def test_loreft_with_rank_one_and_W_zero_is_projection_plus_bias_by_hand(tiny_hf):
    R = torch.tensor([[0.6, 0.8, 0.0]])
    ad = Adaptor("loreft", {"R": R, "W": torch.zeros(1, 3), "b": torch.tensor([2.0])})
    a = torch.tensor([[1.0, 2.0, 3.0]])
    # r·a = 0.6 + 1.6 = 2.2, so a + rᵀ(0 + 2 − 2.2) = a − 0.2·r = (0.88, 1.84, 3)
    assert torch.allclose(ad(a), torch.tensor([[0.88, 1.84, 3.0]]), atol=1e-6)
    # through the model: the hook output is a − (r·a) r + b r applied to the recorded residual
    d, layer = tiny_hf.d_model, 1
    r = torch.randn(d, generator=torch.Generator().manual_seed(3))
    r = r / r.norm()
    big = Adaptor("loreft", {"R": r.unsqueeze(0), "W": torch.zeros(1, d), "b": torch.tensor([1.5])})
    ids, mask = tiny_hf.tokenize(PROMPTS)
    base = record_residuals(tiny_hf, ids, mask, [layer])[layer]
    out = record_residuals(tiny_hf, ids, mask, [layer], steering=steering(tiny_hf, adaptor_term(tiny_hf, big, layer)))
    want = base - (base @ r).unsqueeze(-1) * r + 1.5 * r
    assert torch.allclose(out[layer], want, atol=1e-4)


def test_lorest_with_every_gate_off_is_a_pure_bias_like_caa(tiny):
    d, layer = tiny.d_model, 1
    g = torch.Generator().manual_seed(1)
    Q = torch.linalg.qr(torch.randn(d, 3, generator=g))[0]
    b = torch.randn(d, generator=g)
    ad = Adaptor("lorest", {"Q": Q, "p": torch.zeros(3), "b": b})
    a = torch.randn(5, d, generator=g)
    assert torch.allclose(ad(a), a + b, atol=1e-6)
    ids, mask = tiny.tokenize(PROMPTS)
    as_adaptor = record_residuals(tiny, ids, mask, [layer], steering=steering(tiny, adaptor_term(tiny, ad, layer, 0.5)))
    as_addition = record_residuals(tiny, ids, mask, [layer], steering=steering(tiny, operator_term(tiny, "add", layer, b, 0.5)))
    assert torch.allclose(as_adaptor[layer], as_addition[layer], atol=1e-5)
    # and with every gate on, the gated subspace is zeroed before the bias is added
    on = Adaptor("lorest", {"Q": Q, "p": torch.ones(3), "b": b})
    assert torch.allclose(on(a), a - (a @ Q) @ Q.T + b, atol=1e-5)


# -- the training promises ---------------------------------------------------------------------------


@pytest.mark.parametrize("train,config", [(train_loreft, LoreftConfig(steps=30)), (train_lorest, LorestConfig(steps=30))])
def test_training_is_deterministic_given_a_seed_and_reports_every_step(train, config):
    pos, neg, _ = planted()
    ticks = []
    a = train(pos, neg, config, on_progress=lambda done, total: ticks.append((done, total)))
    b = train(pos, neg, config)
    c = train(pos, neg, type(config)(steps=30, seed=1))
    assert ticks == [(i, 30) for i in range(1, 31)]
    assert a.operator == b.operator and all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert a.operator != c.operator


def test_a_stop_flag_ends_training_and_returns_nothing():
    pos, neg, _ = planted()
    flag = threading.Event()
    with pytest.raises(TrainingStopped, match="stopped after 5 of 50 steps; nothing was kept"):
        train_loreft(pos, neg, LoreftConfig(steps=50), on_progress=lambda d, t: flag.set() if d == 5 else None,
                     stop=flag)
    with pytest.raises(TrainingStopped, match="LoReST training was stopped after 0 of 50"):
        fit("lorest", pos, neg, FitContext(training=LorestConfig(steps=50), stop=lambda: True))


def test_a_diverging_run_stops_with_a_sentence_and_registers_nothing():
    pos, neg, _ = planted()
    before = operator_names()
    with pytest.raises(TrainingError, match=r"LoReFT training diverged.*nothing was kept; try a smaller learning rate"):
        fit("loreft", pos, neg, FitContext(training=LoreftConfig(steps=20, lr=1e30)))
    assert operator_names() == before
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(TrainingError, match="the loss became nan at step 3 of 10"):
        run_steps([p], lambda step: p.sum() * (float("nan") if step == 2 else 1.0), TrainConfig(steps=10), "Toy")


def test_too_little_data_and_bad_settings_get_sentences():
    pos, neg, _ = planted(n=3)
    for name in ("loreft", "lorest"):
        label = METHODS[name].label
        with pytest.raises(FitError, match=rf"{label.split(' (')[0]}.* needs at least 4 pairs; this dataset has 3"):
            fit(name, pos, neg)
    with pytest.raises(TrainingError, match="LoReFT needs at least 4 pairs to train; this dataset has 3"):
        train_loreft(pos, neg)
    pos, neg, _ = planted()
    with pytest.raises(TrainingError, match="rank must be a whole number from 1 to d_model = 16, not 17"):
        train_loreft(pos, neg, LoreftConfig(rank=17))
    with pytest.raises(TrainingError, match="steps must be between 1"):
        train_lorest(pos, neg, LorestConfig(steps=0))
    with pytest.raises(TrainingError, match="learning rate must be a finite number above 0"):
        train_loreft(pos, neg, LoreftConfig(lr=-1.0))
    with pytest.raises(TrainingError, match="tau must be a finite number above 0"):
        train_lorest(pos, neg, LorestConfig(tau=0.0))
    with pytest.raises(TrainingError, match="LoReFT takes a LoreftConfig"):
        fit("loreft", pos, neg, FitContext(training=LorestConfig()))
    with pytest.raises(TrainingError, match="orthonormal rows"):
        Adaptor("loreft", {"R": torch.ones(1, 4), "W": torch.zeros(1, 4), "b": torch.zeros(1)})
    with pytest.raises(TrainingError, match="parameters Q, p, b"):
        Adaptor("lorest", {"Q": torch.eye(4)[:, :2]})


# -- the registry and the steering path ----------------------------------------------------------------


def test_the_registry_says_what_each_trained_method_produces():
    assert METHODS["loreft"].produces == METHODS["lorest"].produces == "adaptor"
    assert METHODS["bipo"].produces == "vector" and METHODS["bipo"].needs_model
    assert all(METHODS[m].trained for m in ("loreft", "lorest", "bipo"))
    assert "bipo" not in {m.name for m in available(FitContext())}
    pos, neg, u = planted()
    res = fit("loreft", pos, neg, FitContext(training=LoreftConfig(rank=1, steps=400)))
    assert res.operator == res.adaptor.operator and get_operator(res.operator).label == "LoReFT adaptor (rank 1)"
    assert res.info["produces"] == "adaptor" and callable(res.adaptor)
    # its operator is bound to these parameters: known by name, never offered as a choice for other vectors
    assert get_operator(res.operator).bound and res.operator in operator_names()
    assert res.operator not in operator_names(include_bound=False)
    assert {"add", "ace", "orthogonal", "projection_cap"} <= set(operator_names(include_bound=False))
    with pytest.raises(Exception, match=r"known operators are add, ace, orthogonal, projection_cap and trained"):
        get_operator("nope")
    # its direction is the mean edit on the negatives, which here is the mean gap (CAA)
    assert torch.allclose(res.direction, (res.adaptor(neg) - neg).mean(0), atol=1e-6)
    gap = (pos - neg).mean(0)
    assert torch.nn.functional.cosine_similarity(res.direction, gap, dim=0) > 0.995
    assert abs(float(res.direction.norm() / gap.norm()) - 1) < 0.1


def test_a_fitted_adaptor_saves_steers_and_reloads_in_a_fresh_registry(tiny_hf, tmp_path):
    ds = ContrastiveDataset("days", [Pair(f"a good day number {i}", f"a bad day number {i}") for i in range(8)])
    res, vec = fit_dataset(tiny_hf, FitRequest(ds, layer=1, method="lorest"),
                           FitContext(training=LorestConfig(steps=40)))
    assert vec.operator == res.operator and vec.method == "lorest" and not vec.operator_spec.additive
    ids, mask = tiny_hf.tokenize(PROMPTS)
    base = record_residuals(tiny_hf, ids, mask, [1])[1]
    steered = record_residuals(tiny_hf, ids, mask, [1], steering=steering(tiny_hf, vec.term(tiny_hf, 0.5)))[1]
    assert torch.allclose(steered, res.adaptor.apply(base, 0.5), atol=1e-5)
    # α = 0 is exactly no steering; the pages' per-row α and row mask work as for any operator
    zero = record_residuals(tiny_hf, ids, mask, [1], steering=steering(tiny_hf, vec.term(tiny_hf, 0.0)))[1]
    assert torch.equal(zero, base)
    data = to_safetensors_bytes(vec)
    unregister_operator(vec.operator)  # as in a new process: the operator is unknown until the file is read
    back = from_safetensors_bytes(data)
    assert back.operator == vec.operator and back.meta == vec.meta
    again = record_residuals(tiny_hf, ids, mask, [1], steering=steering(tiny_hf, back.term(tiny_hf, 0.5)))[1]
    assert torch.allclose(again, steered, atol=1e-6)
    with pytest.raises(VectorError, match="trained LoReST adaptor .*not a single vector.*Save it as .safetensors"):
        export_gguf(vec, tmp_path / "v.gguf", "llama")
    with pytest.raises(VectorError, match="LoReST adaptor"):
        combine([(vec, 1.0)])
    from safetensors.torch import load, save

    tensors = load(data)
    tensors["adaptor.b"] = tensors["adaptor.b"] + 1.0
    from safetensors import safe_open

    with open(tmp_path / "x.safetensors", "wb") as fh:
        fh.write(data)
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as fh:
        md = fh.metadata()
    with pytest.raises(VectorError, match="do not match its operator name"):
        from_safetensors_bytes(save(tensors, metadata=md))
    del tensors["adaptor.b"], tensors["adaptor.Q"], tensors["adaptor.p"]
    with pytest.raises(VectorError, match="holds none of its parameters"):
        from_safetensors_bytes(save(tensors, metadata=md))


def test_the_steer_pages_side_by_side_path_takes_an_adaptor_by_its_operator_name(tiny_hf):
    from steering_core import GenerationConfig, generate
    from steering_core.measure.live import SideBySide, side_by_side

    pos, neg, _ = planted(d=tiny_hf.d_model)
    res = fit("loreft", pos, neg, FitContext(training=LoreftConfig(steps=20)))
    vec = SteeringVector("ad", 1, res.direction, method="loreft", operator=res.operator)
    cfg = GenerationConfig(max_new_tokens=6, temperature=1.0, seed=5)
    req = SideBySide(prompt="hello", layer=1, vector=vec.unit(), alpha=1.0, n_samples=2, config=cfg,
                     operator=vec.operator)
    last = list(side_by_side(tiny_hf, req))[-1]
    assert last.done and last.unsteered == generate(tiny_hf, [tiny_hf.format_prompt("hello")] * 2, cfg).texts
    assert last.steered != last.unsteered


def test_an_adaptor_refuses_a_model_of_another_width(tiny_hf):
    pos, neg, _ = planted(d=8)
    ad = train_loreft(pos, neg, LoreftConfig(steps=5))
    with pytest.raises(Exception, match="trained for d_model = 8, but .* has d_model = 64"):
        adaptor_term(tiny_hf, ad, 1)


# -- BiPO -------------------------------------------------------------------------------------------------

WORDS = ["apple", "river", "stone", "cloud", "paper", "tiger", "glass", "music", "ocean", "bread", "chair", "light"]


def _pairs(words):
    return [f"{w} is yes" for w in words], [f"{w} is no" for w in words]


def test_bipo_lowers_its_loss_and_raises_the_preferred_completion_on_heldout_pairs(tiny):
    tiny_hf = tiny  # both backends
    layer = 1
    train_pos, train_neg = _pairs(WORDS[:8])
    res = train_bipo(tiny_hf, layer, train_pos, train_neg, BipoConfig(steps=60, lr=0.05, batch_size=4))
    assert res.objective_after < res.objective_before - 0.05
    assert sum(res.losses[-10:]) < sum(res.losses[:10])
    held = preference_pairs(tiny_hf, *_pairs(WORDS[8:]))

    def logp(vec, alpha):
        st = None if vec is None else steering(tiny_hf, operator_term(tiny_hf, "add", layer, vec, alpha))
        c = completion_logprobs(tiny_hf, [p.chosen for p in held], [p.chosen_from for p in held], st)
        r = completion_logprobs(tiny_hf, [p.rejected for p in held], [p.rejected_from for p in held], st)
        return c, r

    with torch.no_grad():
        c0, r0 = logp(None, 0.0)
        c1, r1 = logp(res.vector, 1.0)
        cm, rm = logp(res.vector, -1.0)
    assert bool((c1 > c0).all())  # the preferred completion is more likely with +v on every held-out pair
    assert bool(((c1 - r1) > (c0 - r0)).all())  # and more likely than the other one
    assert bool(((cm - rm) < (c0 - r0)).all())  # −v pushes the other way (bi-directional)


def test_bipo_through_the_registry_and_its_bad_inputs(tiny_hf, monkeypatch):
    pos, neg = _pairs(WORDS[:4])
    ctx = FitContext(model=tiny_hf, layer=1, texts=(pos, neg), training=BipoConfig(steps=3, batch_size=2))
    res = fit("bipo", None, None, ctx)
    assert res.operator == "add" and res.direction.shape == (tiny_hf.d_model,) and res.info["produces"] == "vector"
    again = fit("bipo", None, None, ctx)
    assert torch.equal(res.direction, again.direction)  # deterministic given the seed
    with pytest.raises(TrainingError, match="BiPO trains through the model"):
        fit("bipo", None, None, FitContext())
    with pytest.raises(TrainingError, match="BiPO needs at least 2 pairs to train; this dataset has 1"):
        train_bipo(tiny_hf, 1, pos[:1], neg[:1])
    with pytest.raises(TrainingError, match="Pair 2: one text is the other's beginning"):
        train_bipo(tiny_hf, 1, ["a is yes", "b is"], ["a is no", "b is no"], BipoConfig(steps=1))
    with pytest.raises(TrainingError, match="layer 9 does not exist"):
        train_bipo(tiny_hf, 9, pos, neg)
    with pytest.raises(TrainingError, match="beta must be a finite number above 0"):
        train_bipo(tiny_hf, 1, pos, neg, BipoConfig(beta=0.0))
    with pytest.raises(TrainingStopped, match="BiPO training was stopped after 0 of"):
        train_bipo(tiny_hf, 1, pos, neg, BipoConfig(steps=5), stop=lambda: True)
    with pytest.raises(TrainingError, match="activations of 3 pairs but the texts of 4"):
        fit("bipo", torch.randn(3, tiny_hf.d_model), torch.randn(3, tiny_hf.d_model), ctx)
    import steering_core.vectors.trained.bipo as bipo_module

    real, calls = bipo_module.bipo_loss, []

    def turns_nan(*args):
        calls.append(1)
        # the first two calls measure the objective before training (one per sign); then one per step
        return real(*args) * (float("nan") if len(calls) == 4 else 1.0)

    monkeypatch.setattr(bipo_module, "bipo_loss", turns_nan)
    with pytest.raises(TrainingError, match="BiPO training diverged: the loss became nan at step 2 of 5, so nothing was kept"):
        train_bipo(tiny_hf, 1, pos, neg, BipoConfig(steps=5, batch_size=2))
    assert not any(p.grad is not None for p in tiny_hf.module.parameters())  # the model itself never trains


def test_bipo_fits_from_a_dataset_like_any_method(tiny_hf):
    """The Vectors page fits through fit_dataset, which must hand BiPO the model, layer and texts
    (it once passed only activations, and BiPO refused)."""
    ds = ContrastiveDataset("days", [Pair(f"a good day number {i}", f"a bad day number {i}") for i in range(6)])
    res, vec = fit_dataset(tiny_hf, FitRequest(ds, layer=1, method="bipo"),
                           FitContext(training=BipoConfig(steps=2, batch_size=2)))
    assert vec.method == "bipo" and vec.operator == "add" and torch.isfinite(res.direction).all()
    assert res.direction.shape == (tiny_hf.d_model,) and float(res.direction.norm()) > 0
