"""The effect stages on a Ray cluster: workers (Ray actors) that each load the model and SAE once
and measure chunks, with the build's own process as the only writer.

``ray`` in a pack config (or ``--ray``) says where:

* ``local:N``: start a Ray instance on this machine with N CPUs (N workers), stopped at the end;
* ``auto``: join the cluster this machine belongs to (``ray start --head`` here, or ``RAY_ADDRESS``);
* ``ray://host:port``: a remote cluster through Ray Client; ``host:port``: its GCS address, for a
  driver running on a cluster node.

Workers get the SAE as bytes through Ray's object store (no shared file system is assumed) and
load the model by its spec in the driver's precision; a worker whose model differs from the
driver's (another revision, another spec) is refused with a sentence. Each worker runs torch with
the driver's intra-op thread count unless ``ray_threads`` says otherwise, so on the same kind of
hardware a chunk's numbers are bit for bit the single-process build's. A worker that dies (killed,
out of memory, its node lost) is replaced and its chunks are measured again, up to
``max_retries`` times per chunk; an exception inside a chunk stops the stage (committed chunks are
kept, and rerunning resumes)."""

from __future__ import annotations

import heapq
import logging
import os
import re
import shutil
import socket
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from steering_core.errors import SteeringCoreError
from steering_core.model.precision import check_device_spec
from steering_core.pack.distributed.executor import Executor
from steering_core.pack.distributed.work import (
    ChunkJob,
    ChunkResult,
    MeasureSetup,
    Worker,
    code_fingerprint,
    measure_chunk,
    model_fingerprint,
    on_device,
    same_model,
)

if TYPE_CHECKING:
    from steering_core.pack.builder import Builder

#: How a ``ray`` setting may be written.
FORMS = "auto, local:N, ray://host:port or host:port"


class RayBuildError(SteeringCoreError):
    """A Ray cluster that cannot be used as asked (unreachable, too small, workers that cannot start)."""


@dataclass(frozen=True)
class RayAddress:
    text: str
    kind: str  # "local", "auto", "client" (ray://) or "gcs" (host:port)
    cpus: int = 0
    host: str = ""
    port: int = 0


_HOSTPORT = re.compile(r"(ray://)?([A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9A-Fa-f:]+\]):([0-9]{1,5})")


def parse_address(text: Any) -> RayAddress:
    """Read a ``ray`` setting (its form only; nothing is contacted)."""
    t = str(text).strip()
    if t == "auto":
        return RayAddress(t, "auto")
    m = re.fullmatch(r"local:([0-9]+)", t)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise RayBuildError(f"ray = {t!r} asks for no workers; use local:1 or more.")
        return RayAddress(t, "local", cpus=n)
    m = _HOSTPORT.fullmatch(t)
    if m and 0 < int(m.group(3)) < 65536:
        return RayAddress(t, "client" if m.group(1) else "gcs", host=m.group(2).strip("[]"), port=int(m.group(3)))
    raise RayBuildError(f"ray must be {FORMS} (or empty for one process), not {str(text)!r}.")


def _probe(addr: RayAddress, timeout: float = 5.0) -> None:
    """Refuse an address nothing answers on, in seconds rather than after Ray's own retries."""
    try:
        socket.create_connection((addr.host, addr.port), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
        raise RayBuildError(f"The Ray cluster at {addr.text} cannot be reached ({why.lower()}); check the address "
                            "and that the cluster is running, or build without --ray.") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayBuildError("Ray is not installed here (pip install -r requirements.txt installs it); "
                            "or build without --ray.") from None
    return ray


def _writable(res: ChunkResult) -> ChunkResult:
    """A result whose arrays the driver may use as tensors (Ray hands back read-only views of its
    object store; the copies are a chunk's worth of floats)."""
    def own(a):
        return None if a is None else np.array(a)
    return ChunkResult(own(res.effect), own(res.se), own(res.alpha), own(res.dce))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# -- the worker --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorInit:
    """What a worker needs to load its copy of the model and SAE."""

    model: str  # the config's model spec
    dtype: torch.dtype  # the driver's precision (so meta.precision holds for every chunk)
    gpu: bool
    threads: int
    layer: int


def _sae_from_files(files: dict[str, bytes], model):
    from steering_core.model.saes import load_sae_from_disk

    tmp = Path(tempfile.mkdtemp(prefix="steering_sae_"))
    try:
        for name, data in files.items():
            (tmp / Path(name).name).write_bytes(data)
        return load_sae_from_disk(tmp, model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ChunkActor:
    """One Ray worker: loads the model and SAE once, then measures the chunks it is given. A load
    failure is kept and reported (by :meth:`info` and every :meth:`measure`) instead of killing
    the worker, so the driver can say what went wrong."""

    def __init__(self, init: ActorInit, sae_files: dict[str, bytes]):
        self.error: Exception | None = None
        self.worker: Worker | None = None
        try:
            from steering_core.model.loading import load_model

            torch.set_num_threads(init.threads)
            model = load_model(init.model, precision=init.dtype, device="cuda:0" if init.gpu else "cpu")
            sae = _sae_from_files(sae_files, model)
            self.worker = Worker(model, on_device(sae, model.device), init.layer)
        except Exception as exc:  # noqa: BLE001 - reported to the driver as a sentence
            self.error = exc if isinstance(exc, SteeringCoreError) else RuntimeError(f"{type(exc).__name__}: {exc}")

    def info(self) -> dict:
        if self.worker is None:
            return {"pid": os.getpid(), "error": _first_line(self.error)}
        m = self.worker.model
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": str(m.device),
                "threads": torch.get_num_threads(), "fingerprint": model_fingerprint(m),
                "code": code_fingerprint()}

    def measure(self, setup: MeasureSetup, job: ChunkJob) -> ChunkResult:
        if self.worker is None:
            raise self.error
        return measure_chunk(self.worker, setup, job)


# -- the pool ----------------------------------------------------------------------------------------


class RayExecutor(Executor):
    """Chunks on Ray workers, results in job order (see the module docstring)."""

    name = "ray"

    def __init__(self, address: str, actors: int = 0, threads: int = 0, device: str = "auto", max_retries: int = 3,
                 depth: int = 2, ready_timeout_s: float = 1800.0, log: Callable[[str], None] | None = None):
        self.address = parse_address(address)
        self.device = check_device_spec(device)
        self.n_actors = int(actors) or self.address.cpus
        self.threads, self.max_retries, self.depth = int(threads), int(max_retries), max(1, int(depth))
        self.ready_timeout_s = ready_timeout_s
        self._log = log
        self.retried = 0  # chunks measured again because their worker died
        self.replaced = 0  # workers started again
        self.actors: list = []
        self.workers: list[dict] = []
        if self.address.kind == "local":  # a single-node cluster talks over loopback only
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self._ray = _import_ray()
        self._owns = self._connect()

    # -- connection --------------------------------------------------------------------------------
    def _connect(self) -> bool:
        """Join or start the cluster; True when this process must disconnect (or stop it) at close."""
        ray, a = self._ray, self.address
        if ray.is_initialized():
            return False
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        try:
            if a.kind == "local":
                ray.init(num_cpus=a.cpus, include_dashboard=False, **quiet)
            elif a.kind == "auto":
                ray.init(address="auto", **quiet)
            else:
                _probe(a)
                ray.init(address=a.text, **({"logging_level": logging.WARNING} if a.kind == "client" else quiet))
        except RayBuildError:
            raise
        except Exception as exc:  # noqa: BLE001 - every way of not joining becomes a sentence
            if a.kind == "auto":
                raise RayBuildError("No Ray cluster is running for ray = \"auto\" (none started here with "
                                    "`ray start --head`, and RAY_ADDRESS is not set); start one, give its address, "
                                    "or use local:N.") from None
            raise RayBuildError(f"Could not {'start' if a.kind == 'local' else 'join'} the Ray cluster "
                                f"{a.text}: {_first_line(exc)}") from None
        return True

    def describe(self) -> str:
        return f"ray {self.address.text} ({len(self.actors) or self.n_actors or '?'} workers)"

    def log(self, msg: str) -> None:
        if self._log is not None:
            self._log(msg)

    # -- workers -----------------------------------------------------------------------------------
    def _start(self, b: Builder) -> None:
        if self.actors:
            return
        self._log = self._log or b.log
        ray = self._ray
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
        if self.device.startswith("cuda") and not gpus:
            raise RayBuildError(f"device = {self.device!r}, but the Ray cluster has no GPU; use device = \"auto\" or "
                                "\"cpu\".")
        use_gpu = self.device != "cpu" and gpus > 0
        n = self.n_actors or (gpus if use_gpu else max(1, cpus))
        # more workers than GPUs share them (a 2B model leaves most of a GPU's memory free)
        per_gpu = (1.0 if n <= gpus else gpus / n) if use_gpu else 0
        threads = self.threads or torch.get_num_threads()
        files = {p.name: p.read_bytes() for p in sorted((b.dir / "sae").iterdir()) if p.is_file()}
        self._init = ActorInit(b.cfg.model, b.model.dtype, use_gpu, threads, b.layer)
        self._files = ray.put(files)
        self._cls = ray.remote(num_cpus=1, num_gpus=per_gpu, max_restarts=0)(ChunkActor)
        self.max_replacements = self.max_retries + max(4, 2 * n)
        self.actors = [self._spawn() for _ in range(n)]
        try:
            self.workers = ray.get([a.info.remote() for a in self.actors], timeout=self.ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RayBuildError(f"Ray could not start {n} workers within {self.ready_timeout_s:.0f} s: the cluster has "
                                f"{cpus} CPUs and {gpus} GPUs, and each worker asks for 1 CPU"
                                f"{f' and {per_gpu:g} GPU' if use_gpu else ''}; ask for fewer (ray_actors) or add "
                                "nodes.") from None
        except ray.exceptions.RayError as exc:
            raise RayBuildError(f"A Ray worker died while loading the model: {_first_line(exc)}") from None
        want, code = model_fingerprint(b.model), code_fingerprint()
        for w in self.workers:
            if "error" in w:
                raise RayBuildError(f"A Ray worker could not load the model and SAE: {w['error']}")
            if w.get("code") != code:
                raise RayBuildError(f"A Ray worker (pid {w['pid']} on {w.get('host')}) runs other measuring code than "
                                    f"this process (steering_core {w.get('code') or 'without a code hash'} against "
                                    f"{code}); install the same checkout on every node and restart the cluster.")
            if not same_model(want, w["fingerprint"]):
                raise RayBuildError(f"A Ray worker (pid {w['pid']} on {w.get('host')}) loaded a different model than "
                                    f"this process for {b.cfg.model!r} ({w['fingerprint']['name']}, "
                                    f"{w['fingerprint']['dtype']}); every node needs the same model files.")
        self.log(f"ray: {n} workers on {f'{per_gpu:g} GPU' if use_gpu else 'CPU'}, {threads} torch threads each "
                 f"(cluster: {cpus} CPUs, {gpus} GPUs)")

    def _spawn(self):
        return self._cls.remote(self._init, self._files)

    def _replace(self, slot: int, actor, why: str) -> None:
        """Start a new worker in ``slot`` unless that was done already for this dead one."""
        if self.actors[slot] is not actor:
            return
        self.replaced += 1
        if self.replaced > self.max_replacements:
            raise RayBuildError(f"Ray workers keep dying ({self.replaced} replaced; last: {why}); finished chunks "
                                "are kept, rerun the same command to resume.")
        try:
            self._ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors[slot] = self._spawn()

    # -- the work ----------------------------------------------------------------------------------
    def map(self, b: Builder, setup: MeasureSetup, jobs: Sequence[ChunkJob]) -> Iterator[tuple[ChunkJob, ChunkResult]]:
        jobs = list(jobs)
        if not jobs:
            return
        self._start(b)
        ray = self._ray
        ex = ray.exceptions
        lost = (ex.RayActorError, ex.WorkerCrashedError, ex.ObjectLostError, ex.NodeDiedError, ex.OutOfMemoryError)
        setup_ref = ray.put(setup)
        todo = list(range(len(jobs)))  # positions still to measure (a heap: lowest first)
        pending: dict = {}  # ObjectRef -> (position, slot, actor)
        results: dict[int, ChunkResult] = {}
        tries: Counter = Counter()
        nxt, window = 0, 2 * self.depth * len(self.actors)
        try:
            while nxt < len(jobs):
                if nxt in results:
                    yield jobs[nxt], results.pop(nxt)
                    nxt += 1
                    continue
                self._submit(todo, pending, jobs, setup_ref, nxt + window)
                if not pending:
                    raise RuntimeError(f"chunk {jobs[nxt].index} of {setup.label} is neither measured nor queued")
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    pos, slot, actor = pending.pop(ref)
                    try:
                        res = ray.get(ref)
                    except lost as exc:
                        why = _first_line(exc)
                        tries[pos] += 1
                        self.retried += 1
                        if tries[pos] > self.max_retries:
                            raise RayBuildError(f"Chunk {jobs[pos].index} of the {setup.label} stage was lost with its "
                                                f"Ray worker {tries[pos]} times ({why}); finished chunks are kept, "
                                                "rerun the same command to resume.") from None
                        self.log(f"{setup.label}: chunk {jobs[pos].index} lost with its Ray worker ({why}); retrying")
                        self._replace(slot, actor, why)
                        heapq.heappush(todo, pos)
                        continue
                    except ex.RayTaskError as exc:
                        if isinstance(exc.cause, SteeringCoreError):
                            raise exc.cause from None
                        raise exc.as_instanceof_cause() from None
                    results[pos] = _writable(res)
                    if self.on_result is not None:
                        self.on_result(setup.label, jobs[pos].index)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort: the workers are killed at close anyway
                    pass

    def _submit(self, todo: list[int], pending: dict, jobs: list[ChunkJob], setup_ref, limit: int) -> None:
        """Give queued chunks below ``limit`` to the least-loaded workers, at most ``depth`` each
        (one running, one waiting, so a worker never idles between chunks)."""
        while todo and todo[0] < limit:
            loads = [0] * len(self.actors)
            for _, slot, actor in pending.values():
                if self.actors[slot] is actor:
                    loads[slot] += 1
            slot = min(range(len(loads)), key=loads.__getitem__)
            if loads[slot] >= self.depth:
                return
            pos = heapq.heappop(todo)
            actor = self.actors[slot]
            pending[actor.measure.remote(setup_ref, jobs[pos])] = (pos, slot, actor)

    def close(self) -> None:
        ray = self._ray
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False
