"""Where the chunks of an effect-style stage run: the executor abstraction.

A stage hands an executor its :class:`~steering_core.pack.distributed.work.MeasureSetup` and the
chunks it still lacks, and gets ``(job, result)`` pairs back **in job order**, one at a time. The
stage writes each chunk's files and commits its rows before it asks for the next pair, so the
build database keeps a single writer (the builder's process) and the same commit order whichever
executor ran the work, and a killed build resumes from its last commit exactly as before.

* :class:`LocalExecutor` measures each chunk in the builder's process, lazily: chunk i+1 is not
  started before chunk i is committed, which is the single-process build, call for call.
* :class:`~steering_core.pack.distributed.ray_pool.RayExecutor` runs them on Ray workers that
  each load the model and SAE once, and retries a chunk whose worker died.

:func:`executor_for` picks one from the config's ``ray`` setting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from steering_core.pack.distributed.work import ChunkJob, ChunkResult, MeasureSetup, Worker, measure_chunk

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder
    from steering_core.pack.config import PackConfig


class Executor:
    """Runs chunks and yields their results in job order (see the module docstring)."""

    name = "executor"
    #: Called after each result arrives, with the stage label and the chunk index (tests use it
    #: to kill a worker at a known moment).
    on_result: Callable[[str, int], None] | None = None

    def map(self, b: Builder, setup: MeasureSetup, jobs: Sequence[ChunkJob]) -> Iterator[tuple[ChunkJob, ChunkResult]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release workers and connections (idempotent)."""


class LocalExecutor(Executor):
    """Every chunk in the builder's own process, one after the other, on the builder's model and SAE."""

    name = "local"

    def map(self, b: Builder, setup: MeasureSetup, jobs: Sequence[ChunkJob]) -> Iterator[tuple[ChunkJob, ChunkResult]]:
        if not jobs:
            return
        w = Worker(b.model, b.sae, b.layer)
        for job in jobs:
            res = measure_chunk(w, setup, job)
            if self.on_result is not None:
                self.on_result(setup.label, job.index)
            yield job, res


def executor_for(cfg: PackConfig, log: Callable[[str], None] | None = None) -> Executor:
    """The executor a config asks for: local when ``ray`` is empty, else a Ray pool (connected now,
    so an unreachable cluster is refused before anything is written)."""
    if not cfg.ray:
        return LocalExecutor()
    from steering_core.pack.distributed.ray_pool import RayExecutor

    return RayExecutor(cfg.ray, actors=cfg.ray_actors, threads=cfg.ray_threads, device=cfg.device, log=log)
