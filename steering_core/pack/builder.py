"""Run a pack build: the stages of :mod:`steering_core.pack.stages` in their derived order,
skipping those already done, so the same command resumes after ``kill -9`` at any point.

Each stage records completion in the build database (``stages`` table) only after its outputs are
durable (atomic file renames, DuckDB transactions); the effects stage commits per chunk of
features together with that chunk's rows, so a resumed build continues at the first missing
chunk and ends with the same tables as an uninterrupted one. The builder holds what the stages
share: the config, the work folder and its database, the log, the model, corpus, activations and
SAE, each loaded on first use (the model on the config's ``device``, the SAE beside it), and the
executor that measures the effect stages' chunks, in this process or on Ray workers
(:mod:`steering_core.pack.distributed`). Whatever the executor, this process is the only writer.

Everything that can be refused (a CUDA device that does not exist, an unreachable Ray cluster, an
SAE that does not fit the model) is refused before the work folder is created."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from steering_core.model.loading import load_model
from steering_core.model.precision import dtype_name, resolve_device
from steering_core.model.steerable import hook_name
from steering_core.pack import tables
from steering_core.pack.config import PackConfig, PackConfigError, resolve_layer
from steering_core.pack.corpus import Corpus
from steering_core.pack.distributed.executor import Executor, executor_for
from steering_core.pack.distributed.work import on_device
from steering_core.pack.pipeline import PIPELINE
from steering_core.pack.registry import StageRegistry
from steering_core.pack.tables import ensure_schema, mark_stage, set_meta, stage_done
from steering_core.storage.db import connect, transaction

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel


def check_inputs(cfg: PackConfig, model: SteerableModel) -> int:
    """Refuse a hook, layer or given SAE that does not fit the model (one sentence each), before
    anything is written; returns the block the pack studies."""
    layer = resolve_layer(cfg, model)
    if cfg.sae != "train":
        from steering_core.model.saes import load_sae

        sae = load_sae(cfg.sae, model)  # an SAE of another width is refused here
        if sae is None:
            raise PackConfigError("sae must be 'train' or an SAE spec (a folder or release:id).")
        if sae.layer != layer:
            raise PackConfigError(f"The SAE reads {sae.hook_name} (block {sae.layer}) but the pack is set to block "
                                  f"{layer}; set hook = \"{sae.hook_name}\".")
    return layer


class Builder:
    """Runs the stages of one pack config; safe to construct again after a crash.

    ``executor`` measures the effect stages' chunks; by default the config's (``ray``: empty →
    this process), created here and closed by :meth:`close`."""

    def __init__(self, cfg: PackConfig, show_bar: bool = True, model: SteerableModel | None = None,
                 stages: StageRegistry = PIPELINE, executor: Executor | None = None):
        self.cfg = cfg
        self.show_bar = show_bar
        self.stages = stages
        self.dir = cfg.workdir
        if model is None:
            resolve_device(cfg.device)  # a CUDA device that does not exist: refused before anything is written
        self._own_executor = executor is None
        self.executor = executor if executor is not None else executor_for(cfg, log=self.log)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.log_path = self.dir / "build.log"
            self.con = connect(self.dir / "build.duckdb")
        except BaseException:
            self._close_executor()
            raise
        ensure_schema(self.con)
        self._model = model
        self._sae: LoadedSAE | None = None
        self._corpus: Corpus | None = None
        self._acts: np.ndarray | None = None

    # -- what the stages share, loaded on first use ----------------------------------------------
    def log(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        if not hasattr(self, "log_path"):  # before the work folder exists (an executor starting up)
            if self.show_bar:
                print(line, file=sys.stderr, flush=True)
            return
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.show_bar:
            print(line, file=sys.stderr, flush=True)

    @property
    def model(self) -> SteerableModel:
        if self._model is None:
            self.log(f"loading model {self.cfg.model}")
            self._model = load_model(self.cfg.model, precision=self.cfg.precision, device=self.cfg.device)
        return self._model

    @property
    def layer(self) -> int:
        return resolve_layer(self.cfg, self.model)

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = Corpus.load(self.dir / "corpus.npz")
        return self._corpus

    @property
    def acts(self) -> np.ndarray:
        if self._acts is None:
            self._acts = np.load(self.dir / "acts.npy", mmap_mode="r")
        return self._acts

    @property
    def sae(self) -> LoadedSAE:
        """The SAE in the work folder, as the sae stage left it."""
        if self._sae is None:
            from steering_core.model.saes import load_sae_from_disk

            self._sae = on_device(load_sae_from_disk(self.dir / "sae", self.model), self.model.device)
        return self._sae

    def close(self) -> None:
        """Close the build database, and the executor when this builder created it."""
        self._close_executor()
        self.con.close()

    def _close_executor(self) -> None:
        if self._own_executor:
            self.executor.close()

    def forget_sae(self) -> None:
        """Drop the loaded SAE, so the next use reads the one the sae stage just wrote."""
        self._sae = None

    # -- completion records ------------------------------------------------------------------------
    def done(self, stage: str) -> bool:
        return stage_done(self.con, stage)

    def finish(self, stage: str, info: dict | None = None, meta: dict | None = None) -> None:
        """Record ``stage`` as done (with its meta) in one transaction; call only once its outputs are durable."""
        with transaction(self.con):
            if meta:
                set_meta(self.con, meta)
            mark_stage(self.con, stage, info)
        self.log(f"stage {stage} done {json.dumps(info or {})[:300]}")

    def redo(self, *stages: str) -> None:
        """Forget that ``stages`` were done, and remove the files they resume from, so the next run
        computes them afresh (their table rows are rewritten when they run). Stages that need them
        are *not* forgotten: rebuilding the corpus statistics keeps hours of measured effects, and
        the caller names every stage whose inputs changed."""
        import shutil

        found = [self.stages[name] for name in stages]  # an unknown name is an error, not a silent no-op
        for s in found:
            if s.reset is not None:
                s.reset(self)
        with transaction(self.con):
            for s in found:
                self.con.execute("DELETE FROM stages WHERE stage = ?", [s.name])
        for s in found:
            for rel in s.files:
                path = self.dir / rel
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        self.log(f"redo: forgot {', '.join(stages)}")

    # -- the run -----------------------------------------------------------------------------------
    def run(self, until: str | None = None) -> None:
        """Run every stage not yet done, in order; stop after ``until`` when given."""
        order = self.stages.order()
        if until is not None and until not in order:
            raise PackConfigError(f"Unknown stage {until!r}; stages: {order}.")
        self._check_inputs()
        from steering_core.pack.carry import restore_files

        restore_files(self)
        for name in order:
            if not self.done(name):
                t0 = time.perf_counter()
                self.log(f"stage {name} starting")
                self.stages[name].run(self)
                with transaction(self.con):
                    set_meta(self.con, {f"seconds_{name}": round(time.perf_counter() - t0, 1)})
            if name == until:
                break

    def _check_inputs(self) -> None:
        """Refuse a hook, layer or given SAE that does not fit the model before any stage runs."""
        layer = check_inputs(self.cfg, self.model)
        from steering_core.pack.drift import drift, drift_message

        was = tables.get_meta(self.con).get("config")
        if was:
            done = tables.done_stages(self.con)
            found = drift(json.loads(was), json.loads(json.dumps(self.cfg.to_dict())), done)
            if found:
                raise PackConfigError(drift_message(found, self.stages.order(), self.stages.downstream, done))
        with transaction(self.con):
            set_meta(self.con, {"model_id": self.model.name, "hook_point": hook_name(layer), "layer": str(layer),
                                "precision": dtype_name(self.model.dtype),
                                "d_model": str(self.model.d_model), "config": json.dumps(self.cfg.to_dict())})
