"""One chunk of an effect-style stage, as a pure function of a loaded model and SAE.

The effect stages (``control``, ``effects``, ``stability``, ``reference``; docs/design.md §Feature
effects) measure features in chunks of eight. What a chunk computes is :func:`measure_chunk`:
its steering directions (unit decoder rows, or the control's random unit directions), their
loss-matched α unless the job carries them, and the paired effect measurement. It reads nothing
from the work folder and writes nothing, so the same call runs in the build's own process
(:class:`~steering_core.pack.distributed.executor.LocalExecutor`) or in a Ray worker that loaded
the model and SAE itself (:mod:`steering_core.pack.distributed.ray_pool`), and gives the same
numbers in both given the same device, precision and thread count.

Results come back as NumPy arrays on the CPU whatever device did the work, so the builder (the
only writer of the build database) handles them identically."""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch

from steering_core.measure.alpha import loss_matched_alpha
from steering_core.measure.effects import EffectSpec, measure_effects
from steering_core.model.saes import LoadedSAE
from steering_core.model.steering import random_unit_vector

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel
    from steering_core.pack.config import AlphaSpec


@dataclass(frozen=True)
class MeasureSetup:
    """What every chunk of one stage shares: the rollout spec and seed, the unsteered twin rows,
    where the directions come from, and (when α is loss-matched per chunk) the reference windows
    and the α settings. ``key`` names this setup, so a worker converts its arrays once per stage."""

    label: str  # the stage, for logs and errors
    spec: EffectSpec
    seed: int
    rows: np.ndarray  # unsteered per-row feature means [P × baseline rollouts, d_sae], float32
    source: str = "decoder"  # "decoder": unit SAE decoder rows; "control": seeded random unit directions
    ref_ids: np.ndarray | None = None  # held-out windows α is loss-matched on (None: jobs carry α)
    alpha: AlphaSpec | None = None
    control_seed: int = 0  # the build seed the control directions derive from
    first_rollout: int = 0  # rollouts first … of each prompt (a top-up continues an earlier measurement)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class ChunkJob:
    """One chunk: its index (the resume record), its feature or direction ids, and their α when
    they are given instead of loss-matched (the stability and reference re-measurements)."""

    index: int
    ids: tuple[int, ...]
    alphas: tuple[float, ...] | None = None


@dataclass
class ChunkResult:
    """A chunk's effects ``[n, d_sae]`` and SEs, the α used and (when loss-matched) its verified ΔCE."""

    effect: np.ndarray
    se: np.ndarray
    alpha: np.ndarray
    dce: np.ndarray | None = None


def unit_rows(sae: LoadedSAE, ids: Sequence[int]) -> torch.Tensor:
    """Unit decoder rows of features ``ids``: the steering directions whose effects are measured."""
    w = sae.W_dec.detach().float()[list(ids)]
    return w / w.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def control_vectors(d_model: int, seed: int, ids: Iterable[int]) -> torch.Tensor:
    """The control stage's random unit directions ``ids`` (each seeded on its own, so any subset
    equals the same rows of the full set)."""
    return torch.stack([random_unit_vector(d_model, seed * 7919 + 17 + i) for i in ids])


@dataclass
class DeviceSAE(LoadedSAE):
    """An SAE whose weights live on an accelerator: inputs are moved to its device and outputs come
    back on the input's device, so build code that encodes CPU activations (statistics, held-out
    evaluation) and code that encodes GPU residuals (rollouts) both work unchanged."""

    def encode(self, acts: torch.Tensor) -> torch.Tensor:
        return super().encode(acts.to(self.device)).to(acts.device)

    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        return super().decode(feats.to(self.device)).to(feats.device)


def on_device(sae: LoadedSAE, device: torch.device) -> LoadedSAE:
    """``sae`` with its weights on ``device``. On the CPU it is returned as it is (the CPU build
    stays exactly what it was); elsewhere it becomes a :class:`DeviceSAE`."""
    device = torch.device(device)
    if device.type == "cpu" and sae.device.type == "cpu":
        return sae
    sae.sae.to(device)
    return DeviceSAE(**{f.name: getattr(sae, f.name) for f in fields(LoadedSAE)})


def model_fingerprint(model: SteerableModel) -> dict:
    """Name, shape, precision and float64 sums of a few weight tensors: enough to notice a worker
    that loaded a different model (another revision, another spec) than the build's own."""
    params = list(model.module.parameters())
    pick = [params[0], params[len(params) // 2], params[-1]] if params else []
    return {"name": model.name, "d_model": model.d_model, "n_layers": model.n_layers, "dtype": str(model.dtype),
            "n_params": sum(p.numel() for p in params),
            "sums": [float(p.detach().sum(dtype=torch.float64)) for p in pick]}


#: The parts of the package whose code decides what a chunk holds (relative to ``steering_core``).
MEASURING_CODE = ("measure", "model", "pack/distributed")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source that measures a chunk. A Ray worker started from an older checkout
    (a node nobody updated) would otherwise measure with other rules, for instance ignore a
    top-up's ``first_rollout`` and return the first pass again, and nothing in its numbers would
    show it."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for part in MEASURING_CODE:
        for f in sorted((root / part).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def same_model(a: dict, b: dict, rel: float = 1e-4) -> bool:
    """Whether two fingerprints describe the same weights (sums may differ in the last digits
    when reduced on different devices)."""
    if {k: v for k, v in a.items() if k != "sums"} != {k: v for k, v in b.items() if k != "sums"}:
        return False
    return all(abs(x - y) <= rel * max(1.0, abs(x), abs(y)) for x, y in zip(a["sums"], b["sums"]))


@dataclass
class Worker:
    """A loaded model and SAE that measures chunks (in the build's process or a Ray worker)."""

    model: SteerableModel
    sae: LoadedSAE
    layer: int
    _prepared: tuple | None = field(default=None, repr=False)

    def prepared(self, setup: MeasureSetup) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The setup's twin rows and reference windows as tensors on the model's device (converted
        once per setup; arrays from Ray's object store are read-only, so they are copied then)."""
        if self._prepared is None or self._prepared[0] != setup.key:
            dev = self.model.device
            rows = torch.from_numpy(np.require(setup.rows, requirements="W")).to(dev)
            ref = None if setup.ref_ids is None else torch.from_numpy(np.require(setup.ref_ids, requirements="W")).to(dev)
            self._prepared = (setup.key, rows, ref)
        return self._prepared[1], self._prepared[2]


def _cpu(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def measure_chunk(w: Worker, setup: MeasureSetup, job: ChunkJob) -> ChunkResult:
    """Measure one chunk exactly as the single-process build always has: directions, loss-matched
    α (unless given), then the paired effects against the setup's twin rows."""
    rows, ref = w.prepared(setup)
    ids = list(job.ids)
    dirs = (control_vectors(w.model.d_model, setup.control_seed, ids) if setup.source == "control"
            else unit_rows(w.sae, ids))
    if job.alphas is None:
        if ref is None or setup.alpha is None:
            raise ValueError(f"The {setup.label} setup has no reference windows to loss-match α on.")
        a = loss_matched_alpha(w.model, ref, w.layer, dirs, setup.alpha.target_dce, tolerance=setup.alpha.tolerance,
                               symmetric=setup.alpha.symmetric, refine=setup.alpha.refine)
        alphas, dce = a.alpha, a.dce
    else:
        alphas, dce = torch.tensor(job.alphas, dtype=torch.float32), None
    est = measure_effects(w.model, w.sae, w.layer, dirs, alphas, setup.spec, rows, setup.seed,
                          first=setup.first_rollout)
    return ChunkResult(_cpu(est.effect), _cpu(est.se), _cpu(alphas), None if dce is None else _cpu(dce))
