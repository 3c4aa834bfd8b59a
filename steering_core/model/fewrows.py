"""fp32 linear layers that multiply a few rows as ``W · xᵀ`` instead of ``x · Wᵀ``.

Why: on the CPU, PyTorch hands a few-row fp32 ``linear`` to MKL's general ``sgemm`` with the rows
as its short side, and on a CPU without AVX-512 (measured on a 2-core AMD EPYC, the machine most
laptops resemble: no AMX, no AVX512-BF16, so every model there runs in fp32) that path reads the
weight at 5–7 GB/s where the same product written the other way round, the weight as the long side,
reads it at 13–16 GB/s. Live steering is exactly that case: the Steer page's steered column is 2
rows, and a decoding step is 211 such products, the 49,152-token unembedding the largest. Measured
in one run (``python -m bench.generation``): 2 rows × 48 tokens of the embedded model took 5.4 s
plain and 4.25 s this way, same tokens. From about 128 rows on, both ways run at the same speed,
so larger calls (the pack's 896-row effect measurement) keep the plain layer.

The sums are the same dot products, accumulated by another kernel, so outputs agree with the plain
layer to float rounding, not bit for bit (``tests/model/test_model_fewrows.py``). Every guarantee the
tests hold is within one path and still holds: a steered and an unsteered batch of the same size
run the same kernels, so α = 0 equals unsteered bit for bit, and KV-cached decoding equals
re-running the sequence. Calls that need gradients, other dtypes and other devices use the plain
layer. :meth:`SteerableModel.to_dtype` puts the plain class back before any cast.
"""

from __future__ import annotations

import torch

#: Largest number of rows (tokens × batch) multiplied the transposed way; above it both ways are
#: about as fast (measured: 1.46× at 64 rows, 1.14× at 128, equal at 256).
MAX_ROWS = 64


class FewRowsLinear(torch.nn.Linear):
    """An ``nn.Linear`` that computes ``(W · xᵀ)ᵀ`` for fp32 CPU inputs of at most :data:`MAX_ROWS`
    rows. Layers become this class in place; parameters and state dict are untouched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else 0
        if (not 0 < rows <= MAX_ROWS or x.dtype != torch.float32 or x.device.type != "cpu"
                or self.weight.dtype != torch.float32
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        y = product(self.weight, x.reshape(rows, x.shape[-1]))
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def product(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x · weightᵀ`` for a 2-D ``x`` of a few rows, computed as ``(weight · xᵀ)ᵀ`` (contiguous)."""
    return torch.mm(weight, x.T).T.contiguous()


def use_few_rows(module: torch.nn.Module) -> int:
    """Make every plain fp32 CPU ``nn.Linear`` in ``module`` a :class:`FewRowsLinear`; returns how
    many. Subclasses of ``nn.Linear`` are left alone: their forward may do more than a product."""
    n = 0
    for layer in module.modules():
        if (type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32
                and layer.weight.device.type == "cpu"):
            layer.__class__ = FewRowsLinear
            n += 1
    return n


def plain_few_rows(module: torch.nn.Module) -> int:
    """Undo :func:`use_few_rows`; returns how many layers went back to ``nn.Linear``."""
    n = 0
    for layer in module.modules():
        if type(layer) is FewRowsLinear:
            layer.__class__ = torch.nn.Linear
            n += 1
    return n


def few_rows_count(module: torch.nn.Module) -> int:
    """How many layers of ``module`` multiply few rows the transposed way."""
    return sum(1 for layer in module.modules() if type(layer) is FewRowsLinear)
