"""The pack's stages are declared with what they need: the run order is derived from those
declarations, equals the documented pipeline, and bad declarations fail when they are made."""

from __future__ import annotations

import pytest
from packs_util import write_config  # noqa: E402

from steering_core.pack.builder import Builder
from steering_core.pack.config import PackConfigError, load_config
from steering_core.pack.pipeline import PIPELINE
from steering_core.pack.registry import Stage, StageError, StageRegistry

EXPECTED = ["corpus", "activations", "sae", "sae_eval", "stats", "sinks", "control", "effects", "topup", "stability", "reference",
            "neighbors", "approximator", "maps", "outputs", "labels", "ship"]


def test_derived_order_is_the_pipeline():
    assert PIPELINE.order() == EXPECTED
    assert [s.name for s in PIPELINE] == EXPECTED


def test_declared_dependencies():
    assert PIPELINE.needs("corpus") == ()
    assert PIPELINE.needs("activations") == ("corpus",)
    assert PIPELINE.needs("control") == ("stats",)
    assert PIPELINE.needs("effects") == ("control",)  # specific effects need the generic response
    assert PIPELINE.needs("neighbors") == ("reference",)  # effect-similar lists use the stabler basis
    assert PIPELINE.needs("sinks") == ("stats",)
    assert set(PIPELINE.needs("ship")) == {"sae_eval", "sinks", "neighbors", "approximator", "maps", "stability", "reference",
                                           "labels"}
    assert set(PIPELINE.needs("labels")) == {"stats", "outputs", "sinks"}  # both sides, and the sink share
    order = PIPELINE.order()
    for s in PIPELINE:
        assert all(order.index(d) < order.index(s.name) for d in s.needs), s.name


def _noop(b) -> None:
    pass


def test_toy_stage_lands_after_its_dependency():
    reg = StageRegistry()
    for s in PIPELINE:
        reg.add(s)

    @reg.stage("toy", needs=("stats",))
    def toy(b) -> None:
        pass

    order = reg.order()
    assert order.index("toy") > order.index("stats")
    assert order[:len(EXPECTED)] == EXPECTED  # the pipeline's own order is untouched
    assert reg["toy"].run is toy and reg.needs("toy") == ("stats",)
    assert "toy" not in PIPELINE  # a test registry leaves the real pipeline alone


def test_order_is_stable_in_declaration_order():
    reg = StageRegistry()
    reg.add(Stage("a", _noop))
    reg.add(Stage("c", _noop))
    reg.add(Stage("b", _noop, needs=("a",)))
    reg.add(Stage("d", _noop, needs=("c", "b")))
    assert reg.order() == ["a", "c", "b", "d"]


def test_unknown_dependency_is_refused_at_registration():
    reg = StageRegistry()
    reg.add(Stage("a", _noop))
    with pytest.raises(StageError, match=r"'b' needs \['later'\].*declared: \['a'\]"):
        @reg.stage("b", needs=("a", "later"))
        def b(bld) -> None:
            pass
    assert "b" not in reg and reg.order() == ["a"]


def test_cycles_and_duplicates_are_refused_at_registration():
    reg = StageRegistry()
    with pytest.raises(StageError, match="needs itself"):
        reg.add(Stage("loop", _noop, needs=("loop",)))
    reg.add(Stage("a", _noop))
    with pytest.raises(StageError, match="declared twice"):
        reg.add(Stage("a", _noop))
    with pytest.raises(StageError, match=r"Unknown stage 'zzz'; stages: \['a'\]"):
        reg["zzz"]


def test_builder_runs_a_registry_in_order_and_resumes(tmp_path, tiny_hf):
    """The runner is independent of the pipeline: a toy registry runs in its order, records each
    stage, and a second run skips the stages already done."""
    calls: list[str] = []
    reg = StageRegistry()

    @reg.stage("first")
    def first(b) -> None:
        calls.append("first")
        b.finish("first")

    @reg.stage("second", needs=("first",))
    def second(b) -> None:
        calls.append("second")
        b.finish("second")

    cfg = load_config(write_config(tmp_path))
    with pytest.raises(PackConfigError, match="Unknown stage 'third'"):
        Builder(cfg, show_bar=False, model=tiny_hf, stages=reg).run("third")
    Builder(cfg, show_bar=False, model=tiny_hf, stages=reg).run(until="first")
    assert calls == ["first"]
    b = Builder(cfg, show_bar=False, model=tiny_hf, stages=reg)
    b.run()
    assert calls == ["first", "second"]
    assert b.done("first") and b.done("second")
    b.run()
    assert calls == ["first", "second"]
    b.con.close()
