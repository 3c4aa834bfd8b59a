"""What every trained intervention shares: its config, the checks on its data, and one training loop.

Why one loop: the promises a page relies on are the same for LoReFT, LoReST and BiPO, so they
are kept in one place rather than three. The loop is

* **seeded**: every random draw (initialisation, minibatches, Gumbel noise) comes from a
  ``torch.Generator`` seeded by the config, never from the global state, so the same config on
  the same data gives the same parameters bit for bit;
* **stoppable**: the stop flag (a :class:`threading.Event` or any callable returning True) is
  read before every step; a stop raises :class:`TrainingStopped` and returns nothing;
* **reporting**: ``on_progress(steps_done, steps_total)`` after every step, the signature
  :mod:`steering_core.vectors.fitting` uses for its progress bars;
* **refusing divergence**: a loss (or a parameter) that stops being finite ends training with
  a :class:`TrainingError` sentence; nothing half-trained is returned, so nothing can be saved.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from steering_core.vectors.methods import FitError

Progress = Callable[[int, int], None] | None
Stop = threading.Event | Callable[[], bool] | None

#: The most steps one training run may take (a typo such as 10**9 would otherwise hang a page).
MAX_STEPS = 100_000


class TrainingError(FitError):
    """Training that cannot start (bad config, too little data) or that diverged."""


class TrainingStopped(TrainingError):
    """Training stopped by its stop flag before the last step; nothing is returned."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings every trained method has. ``lr`` is Adam's step size in *normalised* units (each
    trainer divides activations by their RMS first), so one default suits models of any scale."""

    steps: int = 300
    lr: float = 1e-2
    seed: int = 0

    def check(self, what: str) -> None:
        """A TrainingError sentence for any setting that cannot train."""
        for name in ("steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TrainingError(f"{what}: {name} must be a whole number, not {value!r}.")
        if not 1 <= self.steps <= MAX_STEPS:
            raise TrainingError(f"{what}: steps must be between 1 and {MAX_STEPS}, not {self.steps}.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (math.isfinite(self.lr)
                                                                                    and self.lr > 0):
            raise TrainingError(f"{what}: the learning rate must be a finite number above 0, not {self.lr!r}.")


def check_rank(rank, d_model: int, what: str) -> int:
    """The adaptor rank as an int in 1..d_model, or a sentence."""
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= d_model:
        raise TrainingError(f"{what}: the rank must be a whole number from 1 to d_model = {d_model}, not {rank!r}.")
    return rank


def check_pairs(pos: torch.Tensor, neg: torch.Tensor, min_pairs: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired activations as float32 CPU tensors, or the sentence saying what is wrong with them
    (including how many pairs the method needs)."""
    if not isinstance(pos, torch.Tensor) or not isinstance(neg, torch.Tensor):
        raise TrainingError(f"{what} trains on positive and negative activations given as tensors.")
    if pos.dim() != 2 or pos.shape != neg.shape:
        raise TrainingError(f"{what}: positive and negative activations must be matching [pairs, d_model] tensors, "
                            f"got {tuple(pos.shape)} and {tuple(neg.shape)}.")
    if pos.shape[0] < min_pairs:
        raise TrainingError(f"{what} needs at least {min_pairs} pairs to train; this dataset has {pos.shape[0]}.")
    pos, neg = pos.detach().float().cpu(), neg.detach().float().cpu()
    if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
        raise TrainingError(f"{what}: the activations contain NaN or infinite values.")
    return pos, neg


def activation_scale(*acts: torch.Tensor) -> float:
    """Root mean square of the activations' coordinates. Trainers work on activations divided by
    it, so learning rates and initial values mean the same on a toy model and a 576-wide LM."""
    x = torch.cat([a.reshape(-1) for a in acts]).double()
    s = float(x.pow(2).mean().sqrt())
    return s if s > 0 and math.isfinite(s) else 1.0


def orthonormal_rows(raw: torch.Tensor) -> torch.Tensor:
    """An ``[r, d]`` matrix with orthonormal rows from an unconstrained ``[r, d]`` one, by
    differentiable QR (document 000 §2.3.3: R is "constrained to be an orthogonal projection
    matrix achieved by differentiable QR decomposition"). Columns of Q are sign-fixed by the
    diagonal of the triangular factor, so the map is continuous and the result unique."""
    q, r = torch.linalg.qr(raw.transpose(0, 1))  # q: [d, r] with orthonormal columns
    sign = torch.sign(torch.diagonal(r))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (q * sign).transpose(0, 1)


def stop_requested(stop: Stop) -> bool:
    """True when the stop flag is raised (an Event that is set, or a callable returning True)."""
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def run_steps(params: Sequence[torch.Tensor], loss_at: Callable[[int], torch.Tensor], config: TrainConfig,
              what: str, on_progress: Progress = None, stop: Stop = None) -> list[float]:
    """Adam on ``params`` for ``config.steps`` steps of ``loss_at(step)``; the loss after each step.

    Gradients are taken with :func:`torch.autograd.grad` for ``params`` only, so a frozen model the
    loss runs through (BiPO) never accumulates ``.grad`` of its own.
    """
    params = list(params)
    opt = torch.optim.Adam(params, lr=float(config.lr))
    losses: list[float] = []
    for step in range(config.steps):
        if stop_requested(stop):
            raise TrainingStopped(f"{what} training was stopped after {step} of {config.steps} steps; "
                                  "nothing was kept.")
        loss = loss_at(step)
        if not bool(torch.isfinite(loss.detach()).all()):
            raise TrainingError(f"{what} training diverged: the loss became {float(loss.detach())} at step "
                                f"{step + 1} of {config.steps}, so nothing was kept; try a smaller learning rate "
                                f"than {config.lr:g}.")
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        opt.step()
        if not all(bool(torch.isfinite(p.detach()).all()) for p in params):
            raise TrainingError(f"{what} training diverged: a parameter became NaN or infinite at step {step + 1} "
                                f"of {config.steps}, so nothing was kept; try a smaller learning rate than "
                                f"{config.lr:g}.")
        losses.append(float(loss.detach()))
        if on_progress is not None:
            on_progress(step + 1, config.steps)
    return losses


__all__ = ["MAX_STEPS", "Progress", "Stop", "TrainConfig", "TrainingError", "TrainingStopped", "activation_scale",
           "check_pairs", "check_rank", "orthonormal_rows", "run_steps", "stop_requested"]
