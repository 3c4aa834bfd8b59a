"""Reading the residual stream: after chosen blocks, on one forward pass or on every pass in a scope.

Why here and not in a forward of its own: recording rides on the same per-block hooks as steering
(:mod:`steering_core.model.hooks`), so a recorder sees the residual exactly as steering left it
(or just before, with ``before_steering``), and a pass can end right after the deepest block it
needs, which is what makes reading SAE features at a middle block cheap.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import torch

from steering_core.errors import SteeringError
from steering_core.model.hooks import RECORDERS, StopForward, hooks_on
from steering_core.model.steering import Steering, steer

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


def _checked_layers(model: SteerableModel, layers: Iterable[int]) -> list[int]:
    layers = sorted({int(layer) for layer in layers})
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if bad:
        raise SteeringError(f"layer {bad[0]} is out of range 0..{model.n_layers - 1}.")
    return layers


@dataclass
class _Recorder:
    key: int
    layers: set[int]
    stop_after: int | None
    store: dict[int, torch.Tensor] = field(default_factory=dict)
    before_steering: bool = False
    append: bool = False
    chunks: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def keep(self, layer: int, hidden: torch.Tensor) -> None:
        if self.append:
            self.chunks.setdefault(layer, []).append(hidden.detach().clone())
        else:
            self.store[layer] = hidden.detach().clone()


def record_residuals(model: SteerableModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     layers: Sequence[int], steering: Steering | Sequence | None = None,
                     stop_early: bool = True) -> dict[int, torch.Tensor]:
    """Residuals after the given blocks (``[batch, pos, d_model]`` each), optionally while steering.

    With ``stop_early`` the forward pass ends after the deepest requested block, which is what
    makes measuring SAE features at a middle layer cheap.
    """
    layers = _checked_layers(model, layers)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    rec = _Recorder(id(model.module), set(layers), layers[-1] if stop_early and layers else None)
    with torch.no_grad(), steer(model, steering), hooks_on(model, layers):
        token = RECORDERS.set(RECORDERS.get() + (rec,))
        try:
            model.backend.forward(input_ids, attention_mask)
        except StopForward:
            pass
        finally:
            RECORDERS.reset(token)
    return {layer: rec.store[layer] for layer in layers}


def run_through(model: SteerableModel, layer: int, forward: Callable[[], object]) -> None:
    """Call ``forward`` (one forward pass of ``model``) but end it once block ``layer`` has run and
    its hooks have read it: what recorders and steering at that block see is unchanged, and the
    blocks after it, the unembedding and whatever would use the logits are skipped."""
    layer = _checked_layers(model, [layer])[0]
    rec = _Recorder(id(model.module), {layer}, layer)
    with hooks_on(model, [layer]):
        token = RECORDERS.set(RECORDERS.get() + (rec,))
        try:
            forward()
        except StopForward:
            pass
        finally:
            RECORDERS.reset(token)


@contextlib.contextmanager
def recording(model: SteerableModel, layers: Sequence[int],
              before_steering: bool = True) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Collect the residual after the given blocks on *every* forward pass inside the scope.

    Yields ``{layer: [chunk, ...]}``: one ``[batch, new_positions, d_model]`` chunk per forward
    call (the prefill, then one per decoding step). With ``before_steering`` the residual is read
    before this layer's own steering is added. Because steering at block l only changes what
    blocks after l see, that is exactly what an unsteered re-run of the steered rollout would
    give at block l, so effect measurement needs no second pass over the rollouts.
    """
    layers = _checked_layers(model, layers)
    rec = _Recorder(id(model.module), set(layers), None, before_steering=before_steering, append=True)
    rec.chunks.update({layer: [] for layer in layers})
    with hooks_on(model, layers):
        token = RECORDERS.set(RECORDERS.get() + (rec,))
        try:
            yield rec.chunks
        finally:
            RECORDERS.reset(token)
