"""The synthetic attribute dataset of the "steering clear" toy world ([Purchase 2025] §3.1.1,
after [Krasheninnikov 2024]; docs/references.md).

A sample has ``m`` attributes, each taking one of 8 discrete values. Value ``j`` of attribute ``i``
is drawn as its *anchor* vector ``μ[i, j] ∈ ℝ⁸`` (anchors ~ N(0, 1), fixed per world) plus fresh
Gaussian noise of standard deviation 0.1, and the input is the concatenation of the ``m`` 8-d
blocks (length ``8m``); the label is the ``m`` value indices. The document writes the noise as
N(0, 0.1) without saying whether 0.1 is the variance or the standard deviation; this module reads
it as the standard deviation (``noise_std``), which leaves the values "highly separable" as the
document says either way.

Everything here is a pure function of a :class:`torch.Generator`, so a seed fixes a world and its
samples exactly. Why this world at all: its ground truth is known (which value an attribute
takes), so a steering method can be scored by *accuracy on the steered attribute* instead of by a
proxy, which no language-model task allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steering_core.errors import SteeringCoreError

N_VALUES = 8  # values per attribute, fixed by the document
VALUE_DIM = 8  # each value is an anchor in ℝ⁸


class ToyWorldError(SteeringCoreError):
    """A toy-world setting that cannot be honoured (m < 1, more examples than exist, unknown method …)."""


@dataclass(frozen=True)
class WorldConfig:
    """One toy world: how many attributes, how noisy, and the seed that draws its anchors."""

    m: int = 60
    noise_std: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1:
            raise ToyWorldError(f"The toy world needs at least one attribute (m ≥ 1), got m = {self.m!r}.")
        if not (isinstance(self.noise_std, (int, float)) and 0.0 <= float(self.noise_std) < float("inf")):
            raise ToyWorldError(f"The noise standard deviation must be a finite number ≥ 0, got {self.noise_std!r}.")

    @property
    def input_dim(self) -> int:
        return self.m * VALUE_DIM


@dataclass(frozen=True)
class World:
    """A drawn world: its config and its anchors ``[m, 8, 8]`` (attribute, value, coordinate)."""

    config: WorldConfig
    anchors: torch.Tensor

    @property
    def m(self) -> int:
        return self.config.m


def make_world(config: WorldConfig) -> World:
    """Draw the anchors of a world from its seed (the same seed gives the same anchors)."""
    return World(config, make_anchors(config.m, torch.Generator().manual_seed(config.seed)))


def make_anchors(m: int, gen: torch.Generator) -> torch.Tensor:
    """Anchors ``[m, 8, 8]`` ~ N(0, 1): one 8-d vector per (attribute, value)."""
    if m < 1:
        raise ToyWorldError(f"The toy world needs at least one attribute (m ≥ 1), got m = {m}.")
    return torch.randn(m, N_VALUES, VALUE_DIM, generator=gen)


def sample_values(n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, m]`` value indices, each uniform over the 8 values and independent."""
    if n < 0:
        raise ToyWorldError(f"Cannot draw a negative number of samples ({n}).")
    return torch.randint(0, N_VALUES, (n, m), generator=gen)


def encode(values: torch.Tensor, anchors: torch.Tensor, noise_std: float, gen: torch.Generator) -> torch.Tensor:
    """Inputs ``[n, 8m]`` for value indices ``[n, m]``: each attribute's anchor plus fresh noise,
    the ``m`` blocks concatenated in attribute order."""
    m = anchors.shape[0]
    picked = anchors[torch.arange(m).unsqueeze(0), values]  # [n, m, 8]
    noise = torch.randn(picked.shape, generator=gen) * float(noise_std)
    return (picked + noise).reshape(values.shape[0], m * VALUE_DIM)


def sample(world: World, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fresh i.i.d. samples of a world: inputs ``[n, 8m]`` and labels ``[n, m]``."""
    y = sample_values(n, world.m, gen)
    return encode(y, world.anchors, world.config.noise_std, gen), y


def make_dataset(world: World, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples drawn from ``seed`` alone, so a dataset is reproducible from (world, n, seed)."""
    return sample(world, n, torch.Generator().manual_seed(seed))


def with_value(world: World, x: torch.Tensor, attribute: int, value: int, gen: torch.Generator) -> torch.Tensor:
    """Copies of inputs ``x`` with one attribute's block redrawn at ``value`` (its anchor plus fresh
    noise) and every other block untouched: the positive twin of a negative example, differing
    from it in the steered attribute only, as a contrastive pair should."""
    check_attribute(world, attribute)
    out = x.clone()
    lo = attribute * VALUE_DIM
    noise = torch.randn(x.shape[0], VALUE_DIM, generator=gen) * float(world.config.noise_std)
    out[:, lo:lo + VALUE_DIM] = world.anchors[attribute, value] + noise
    return out


def check_attribute(world: World, attribute: int) -> None:
    """A sentence when ``attribute`` is not one of the world's attributes."""
    if isinstance(attribute, bool) or not isinstance(attribute, int) or not 0 <= attribute < world.m:
        raise ToyWorldError(f"Attribute {attribute!r} does not exist: this world has attributes 0 to {world.m - 1}.")


__all__ = ["N_VALUES", "VALUE_DIM", "ToyWorldError", "World", "WorldConfig", "check_attribute", "encode",
           "make_anchors", "make_dataset", "make_world", "sample", "sample_values", "with_value"]
