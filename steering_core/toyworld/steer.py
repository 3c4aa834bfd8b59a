"""The steering task of the toy world and its score ([Purchase 2025] §3.1.3; docs/references.md).

Task: make the model predict value ``target`` (μ₁, index 0, by default) for one attribute ``k``,
whatever the input says. The anchors are random, so no value is special and steering every
attribute towards the same index loses nothing.

Examples. A steering example is a contrastive pair that differs *only* in attribute k: the
negative is a fresh sample whose attribute k holds some other value, the positive is the same
sample with attribute k's block redrawn at the target (anchor plus fresh noise). Methods see the
pair's activations after block ``layer``. Test inputs are fresh negatives, so unsteered the model
almost never predicts the target (the baseline is ≈ 0, not the 1/8 of a random guess).

Score. The share of test inputs whose *steered* prediction for attribute k is the target, the
document's metric (it found the accuracy over all attributes dominated by the unsteered ones);
:class:`SteerScore` also reports how many other attributes stay right, which says whether a
method steers cleanly or just breaks the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steering_core.toyworld.adapt import ActivationSpace, Edit
from steering_core.toyworld.data import N_VALUES, VALUE_DIM, ToyWorldError, World, check_attribute, sample, with_value
from steering_core.toyworld.mlp import ToyMLP


@dataclass(frozen=True)
class SteeringTask:
    """Steer ``attribute`` to value ``target`` by editing the residual after block ``layer``."""

    attribute: int
    layer: int
    target: int = 0


@dataclass(frozen=True)
class SteeringSplit:
    """Steering examples and test inputs for one task, drawn disjointly (independent draws).

    ``neg`` / ``pos`` ``[pool, 8m]``: pair i is (``neg[i]``, ``pos[i]``); ``test_x`` ``[n_test, 8m]``
    with labels ``test_y`` ``[n_test, m]`` (none has the target value at the steered attribute);
    ``val_x`` / ``val_y`` likewise, for choosing a steering strength without touching the test set."""

    task: SteeringTask
    neg: torch.Tensor
    pos: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    @property
    def pool(self) -> int:
        return int(self.neg.shape[0])


@dataclass(frozen=True)
class SteerScore:
    """``target_accuracy``: share of test inputs steered to the target value; ``kept_accuracy``:
    share of the *other* attributes still predicted right (1.0 when m = 1)."""

    target_accuracy: float
    kept_accuracy: float


def check_task(world: World, model: ToyMLP, task: SteeringTask) -> None:
    """Sentences for a task the world or model cannot pose."""
    check_attribute(world, task.attribute)
    model.check_layer(task.layer)
    if isinstance(task.target, bool) or not isinstance(task.target, int) or not 0 <= task.target < N_VALUES:
        raise ToyWorldError(f"Target value {task.target!r} does not exist: values are 0 to {N_VALUES - 1}.")


def off_target(world: World, n: int, task: SteeringTask, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fresh samples whose steered attribute holds any value but the target (uniformly)."""
    x, y = sample(world, n, gen)
    shift = torch.randint(1, N_VALUES, (n,), generator=gen)
    y[:, task.attribute] = (task.target + shift) % N_VALUES
    lo = task.attribute * VALUE_DIM
    noise = torch.randn(n, VALUE_DIM, generator=gen) * float(world.config.noise_std)
    x[:, lo:lo + VALUE_DIM] = world.anchors[task.attribute, y[:, task.attribute]] + noise
    return x, y


def make_split(world: World, task: SteeringTask, pool: int, n_test: int, seed: int, n_val: int = 0) -> SteeringSplit:
    """``pool`` steering pairs, ``n_test`` test inputs and ``n_val`` validation inputs for ``task``,
    all from ``seed`` (in that order, so the test set does not depend on ``n_val``). They are
    separate draws, so no test input is ever fitted on or used to choose a setting."""
    if pool < 1 or n_test < 1 or n_val < 0:
        raise ToyWorldError(f"A split needs at least one steering example and one test input, got {pool} and {n_test}.")
    check_attribute(world, task.attribute)
    gen = torch.Generator().manual_seed(seed)
    neg, _ = off_target(world, pool, task, gen)
    pos = with_value(world, neg, task.attribute, task.target, gen)
    test_x, test_y = off_target(world, n_test, task, gen)
    val_x, val_y = off_target(world, n_val, task, gen)
    return SteeringSplit(task, neg, pos, test_x, test_y, val_x, val_y)


def space_of(model: ToyMLP) -> ActivationSpace:
    """The activation space the operator registry sees for ``model``."""
    return ActivationSpace(n_layers=model.n_layers, d_model=model.d_model)


@torch.no_grad()
def pair_activations(model: ToyMLP, split: SteeringSplit, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``(pos, neg)`` ``[n, d]`` of the first ``n`` steering pairs at the task's layer."""
    n = split.pool if n is None else n
    if n > split.pool:
        raise ToyWorldError(f"{n:,} steering examples were asked for but only {split.pool:,} are available.")
    layer = split.task.layer
    return model.residual(split.pos[:n], layer), model.residual(split.neg[:n], layer)


@torch.no_grad()
def steered_logits(model: ToyMLP, x: torch.Tensor, layer: int, edit: Edit | None) -> torch.Tensor:
    """Logits ``[n, m, 8]`` with ``edit`` applied to the residual after block ``layer`` (None: unsteered)."""
    h = model.residual(x, layer)
    if edit is not None:
        h = edit(h)
        if not isinstance(h, torch.Tensor) or h.shape != (x.shape[0], model.d_model):
            raise ToyWorldError(f"A steering edit must return [n, {model.d_model}] activations, "
                                f"got {getattr(h, 'shape', type(h).__name__)}.")
    return model.readout(h.float(), layer)


def score(logits: torch.Tensor, y: torch.Tensor, task: SteeringTask) -> SteerScore:
    """:class:`SteerScore` of steered ``logits`` ``[n, m, 8]`` against true labels ``y`` ``[n, m]``."""
    pred = logits.argmax(-1)
    k = task.attribute
    hit = float((pred[:, k] == task.target).float().mean())
    others = torch.ones(pred.shape[1], dtype=torch.bool)
    others[k] = False
    kept = float((pred[:, others] == y[:, others]).float().mean()) if bool(others.any()) else 1.0
    return SteerScore(hit, kept)


def steered_accuracy(model: ToyMLP, split: SteeringSplit, edit: Edit | None, on: str = "test") -> SteerScore:
    """How well ``edit`` steers the split's test inputs (``on="val"``: its validation inputs;
    ``edit`` None: the unsteered baseline)."""
    if on not in ("test", "val"):
        raise ToyWorldError(f"Score on 'test' or 'val', not {on!r}.")
    x, y = (split.test_x, split.test_y) if on == "test" else (split.val_x, split.val_y)
    if x.shape[0] == 0:
        raise ToyWorldError("This split has no validation inputs; make it with n_val > 0.")
    return score(steered_logits(model, x, split.task.layer, edit), y, split.task)


__all__ = ["SteerScore", "SteeringSplit", "SteeringTask", "check_task", "make_split", "off_target",
           "pair_activations", "score", "space_of", "steered_accuracy", "steered_logits"]
