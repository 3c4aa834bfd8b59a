"""The model to steer in the toy world: a residual GeLU MLP with a layernorm and a linear
classifier ([Purchase 2025] §3.1, after [Krasheninnikov 2024]; docs/references.md).

Reading of "4-layer MLP with residual connections across all layers, hidden layers
512-512-256-512": a 512-wide *residual stream* (the input ``8m`` is projected into it), four
blocks ``h ← h + W₂·GeLU(W₁·h)`` whose hidden widths are 512, 512, 256 and 512 (a residual
connection across a 256-wide layer needs a constant stream width, so the 256 is a bottleneck
inside block 2), then a layernorm and one linear layer giving 8 logits per attribute. This
mirrors the transformer the rest of the project steers: "layer l" is the residual stream after
block l, and steering edits it there and lets the remaining blocks run (docs/design.md
§Steering semantics).

Training follows §3.1.2: cross-entropy over every attribute, Adam at 1e-3, an 80:20
train/validation split, and the weights with the best validation loss kept. The document trains
500,000 samples for 50 epochs; on a laptop CPU the model passes 99 % attribute accuracy long
before that, so :class:`TrainConfig` can stop at a target accuracy or a time limit.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from steering_core.measure.scores import mean_and_se, wilson_interval
from steering_core.toyworld.data import N_VALUES, ToyWorldError, World, make_dataset

HIDDEN = (512, 512, 256, 512)
WIDTH = 512


class Block(nn.Module):
    """One residual block: ``h + W₂·GeLU(W₁·h)``."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.down(nn.functional.gelu(self.up(h)))


class ToyMLP(nn.Module):
    """Inputs ``[n, 8m]`` → logits ``[n, m, 8]``. :meth:`residual` and :meth:`readout` split the
    forward pass at a layer, which is all steering needs: edit the residual, then read out."""

    def __init__(self, m: int, width: int = WIDTH, hidden: tuple[int, ...] = HIDDEN):
        super().__init__()
        self.m = m
        self.embed = nn.Linear(m * 8, width)
        self.blocks = nn.ModuleList(Block(width, h) for h in hidden)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, m * N_VALUES)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return self.embed.out_features

    def check_layer(self, layer: int) -> None:
        """A sentence when ``layer`` is not a block of this model."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ToyWorldError(f"Layer {layer!r} does not exist: the toy MLP has layers 0 to {self.n_layers - 1}.")

    def residual(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual stream ``[n, width]`` after block ``layer``."""
        self.check_layer(layer)
        h = self.embed(x)
        for block in self.blocks[:layer + 1]:
            h = block(h)
        return h

    def readout(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Logits ``[n, m, 8]`` from the residual after block ``layer`` (the later blocks, the
        layernorm and the classifier)."""
        self.check_layer(layer)
        for block in self.blocks[layer + 1:]:
            h = block(h)
        return self.head(self.norm(h)).view(h.shape[0], self.m, N_VALUES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.residual(x, 0), 0)


@dataclass(frozen=True)
class TrainConfig:
    """How to pre-train the MLP. Defaults are the document's optimiser (Adam, 1e-3, 80:20 split,
    best validation loss kept) on a smaller sample, with early stopping once validation accuracy
    reaches ``stop_accuracy`` (None: run every epoch) or after ``max_seconds``."""

    n_samples: int = 100_000
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 512
    val_fraction: float = 0.2
    seed: int = 0
    stop_accuracy: float | None = 0.995
    max_seconds: float | None = None

    def __post_init__(self):
        if self.n_samples < 10:
            raise ToyWorldError(f"Training the toy MLP needs at least 10 samples, got {self.n_samples}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ToyWorldError(f"The validation share must lie strictly between 0 and 1, got {self.val_fraction}.")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ToyWorldError("Epochs, batch size and learning rate must all be positive.")


@dataclass
class TrainReport:
    """What pre-training did: per-epoch losses and the kept model's validation accuracy."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_accuracy_se: list[float] = field(default_factory=list)
    val_samples: int = 0
    best_epoch: int = -1
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        """Attribute accuracy of the kept weights on the validation split."""
        return self.val_accuracy[self.best_epoch] if self.best_epoch >= 0 else float("nan")

    @property
    def accuracy_se(self) -> float:
        """The SE of :attr:`accuracy` over validation *samples*: a sample's attributes share one
        input, so their labels are not independent and a binomial SE over labels would claim
        m times too many observations."""
        return self.val_accuracy_se[self.best_epoch] if 0 <= self.best_epoch < len(self.val_accuracy_se) else float("nan")

    def accuracy_text(self) -> str:
        """The kept accuracy with its uncertainty, in words. Every sample read right has an SE of
        0, which reads as exact; the 95 % Wilson bound over the samples says what it establishes."""
        acc, se, n = self.accuracy, self.accuracy_se, self.val_samples
        if acc != acc:
            return "no validation accuracy (not trained)"
        if acc == 1.0 and n > 0:
            return f"every attribute of all {n:,} held-out samples right (95 % bound ≥ {wilson_interval(n, n)[0]:.2%})"
        return f"{acc:.2%} of attributes right on {n:,} held-out samples" + (f" (± {se:.2%}, SE over samples)" if se == se else "")


@dataclass
class TrainedModel:
    """A world together with the model trained on it: steering needs both (the anchors to build
    examples, the model to steer)."""

    world: World
    model: ToyMLP
    report: TrainReport


def attribute_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of (sample, attribute) labels predicted right, over every attribute."""
    return float((logits.argmax(-1) == y).float().mean())


@torch.no_grad()
def per_sample_accuracy(model: ToyMLP, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> tuple[float, torch.Tensor]:
    """(mean cross-entropy, each sample's share of attributes read right) of ``model`` on ``(x, y)``.
    Per sample, because that is the unit an uncertainty must be computed over (one input, m labels)."""
    model.eval()
    loss, shares = 0.0, []
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i:i + batch_size])
        yy = y[i:i + batch_size]
        loss += float(nn.functional.cross_entropy(logits.reshape(-1, N_VALUES), yy.reshape(-1), reduction="sum"))
        shares.append((logits.argmax(-1) == yy).double().mean(-1))
    return loss / y.numel(), torch.cat(shares)


def evaluate(model: ToyMLP, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> tuple[float, float]:
    """(mean cross-entropy, attribute accuracy) of ``model`` on ``(x, y)``."""
    loss, shares = per_sample_accuracy(model, x, y, batch_size)
    return loss, float(shares.mean())


def train_mlp(world: World, config: TrainConfig = TrainConfig(),
              on_epoch: Callable[[int, TrainReport], None] | None = None) -> TrainedModel:
    """Pre-train a :class:`ToyMLP` on fresh samples of ``world`` and keep the weights with the
    best validation loss. A loss that turns NaN stops training with a sentence."""
    torch.manual_seed(config.seed)
    x, y = make_dataset(world, config.n_samples, seed=config.seed + 1_000_003)
    n_val = max(1, int(round(config.n_samples * config.val_fraction)))
    xt, yt, xv, yv = x[n_val:], y[n_val:], x[:n_val], y[:n_val]
    model = ToyMLP(world.m)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed + 7)
    report, best, best_loss, t0 = TrainReport(val_samples=n_val), None, float("inf"), time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order, total = torch.randperm(xt.shape[0], generator=gen), 0.0
        for i in range(0, xt.shape[0], config.batch_size):
            idx = order[i:i + config.batch_size]
            loss = nn.functional.cross_entropy(model(xt[idx]).reshape(-1, N_VALUES), yt[idx].reshape(-1))
            if not torch.isfinite(loss):
                raise ToyWorldError(f"Training the toy MLP diverged (loss {float(loss)}) in epoch {epoch + 1}; "
                                    "try a smaller learning rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        val_loss, shares = per_sample_accuracy(model, xv, yv)
        val_acc, val_se = mean_and_se(shares.numpy())  # over samples, the unit of independence
        report.val_accuracy_se.append(val_se)
        report.train_loss.append(total / xt.shape[0])
        report.val_loss.append(val_loss)
        report.val_accuracy.append(val_acc)
        if val_loss < best_loss:
            best_loss, best, report.best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch
        report.seconds = time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(epoch, report)
        if config.stop_accuracy is not None and val_acc >= config.stop_accuracy:
            break
        if config.max_seconds is not None and report.seconds >= config.max_seconds:
            break
    model.load_state_dict(best)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return TrainedModel(world, model, report)


__all__ = ["HIDDEN", "WIDTH", "Block", "ToyMLP", "TrainConfig", "TrainReport", "TrainedModel", "attribute_accuracy",
           "evaluate", "per_sample_accuracy", "train_mlp"]
