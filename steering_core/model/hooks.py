"""The hook registry: one forward hook per (model, block), reference-counted, reading context variables.

Why one module: steering (:func:`steering_core.model.steering.steer`) and residual recording
(:mod:`steering_core.model.recording`) must see the same hook at the same block, in a fixed order
(recorders that read before steering, the steering terms, recorders that read after), and must
never leave a hook behind. Each scope adds itself to a :class:`contextvars.ContextVar`, so two
threads (two browser sessions) using the same model never see each other's steering or recorders;
the hook on a block exists while at least one scope needs it, and is removed when the last exits,
exceptions included.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel

#: The open ``steer`` scopes of this thread or task: ``(id(model.module), Steering)`` pairs.
ACTIVE: contextvars.ContextVar[tuple] = contextvars.ContextVar("steering_active", default=())
#: The open recorders of this thread or task (``steering_core.model.recording``).
RECORDERS: contextvars.ContextVar[tuple] = contextvars.ContextVar("steering_recorders", default=())


class StopForward(Exception):
    """Raised by a recorder once the last layer it needs has run: skips the rest of the model."""


class _Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.handles: dict[int, object] = {}
        self.counts: dict[int, int] = {}


_REGISTRIES: "weakref.WeakKeyDictionary[torch.nn.Module, _Registry]" = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def _registry(model: SteerableModel) -> _Registry:
    with _REGISTRIES_LOCK:
        reg = _REGISTRIES.get(model.module)
        if reg is None:
            reg = _REGISTRIES[model.module] = _Registry()
        return reg


def _make_hook(key: int, layer: int):
    def hook(_module, _inputs, output):
        active = ACTIVE.get()
        recorders = RECORDERS.get()
        if not active and not recorders:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        for rec in recorders:
            if rec.before_steering and rec.key == key and layer in rec.layers:
                rec.keep(layer, hidden)
        changed = False
        for owner, steer_set in active:
            if owner == key and layer in steer_set.layers:
                hidden = steer_set.apply_at(layer, hidden)
                changed = True
        for rec in recorders:
            if rec.key == key and layer in rec.layers:
                if not rec.before_steering:
                    rec.keep(layer, hidden)
                if rec.stop_after is not None and layer == rec.stop_after:
                    raise StopForward
        if not changed:
            return None
        if isinstance(output, tuple):
            return (hidden,) + tuple(output[1:])
        return hidden

    return hook


@contextlib.contextmanager
def hooks_on(model: SteerableModel, layers: Iterable[int]) -> Iterator[None]:
    """Hold the hook on each of ``layers`` for the scope: installed by the first scope that needs
    it, removed when the last one exits (exceptions included), so a model outside every scope
    runs with no hook at all. What a hook does is read from :data:`ACTIVE` and :data:`RECORDERS`."""
    reg = _registry(model)
    key = id(model.module)
    acquired: list[int] = []
    try:
        with reg.lock:
            for layer in sorted(set(layers)):
                if reg.counts.get(layer, 0) == 0:
                    module = model.backend.layer_module(layer)
                    reg.handles[layer] = module.register_forward_hook(_make_hook(key, layer))
                reg.counts[layer] = reg.counts.get(layer, 0) + 1
                acquired.append(layer)
        yield
    finally:
        with reg.lock:
            for layer in acquired:
                reg.counts[layer] -= 1
                if reg.counts[layer] == 0:
                    reg.handles.pop(layer).remove()
                    del reg.counts[layer]


def installed_hook_count(model: SteerableModel) -> int:
    """Hooks this module has on the model right now (0 whenever no scope is open)."""
    reg = _registry(model)
    with reg.lock:
        return len(reg.handles)
