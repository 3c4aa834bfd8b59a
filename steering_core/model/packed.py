"""bf16 linear layers whose weights are laid out once for oneDNN's CPU kernels (AMX or AVX512-BF16).

Why: PyTorch's bf16 ``linear`` on the CPU hands oneDNN the weight in its plain layout, and oneDNN
re-blocks it on every call. For the small batches of live steering that re-blocking costs as much
as the multiplication: measured on this project's 2-core AMX machine (one thread), 2 rows × 576 →
1,536 took 0.26 ms plain and 0.17 ms packed (fp32: 0.21 ms), and the 49,152-token unembedding at 2
rows 12.9 ms against 9.5 ms; at 896 rows the gain is about 10 %. On this project's AMX machine
the packed kernel computes the same sums in the same order as the plain bf16 layer, so outputs are
bit for bit the same for contiguous inputs (``tests/model/test_precision.py`` checks logits and generated
tokens there, and closeness on CPUs without AMX, whose plain bf16 path may block differently);
nothing measured in one mode differs from the other.

Packing applies to bf16 weights on the CPU only, and is skipped (the plain layer kept) wherever the
running PyTorch lacks the oneDNN ops, and for models above :data:`MAX_PACKED_PARAMS` linear
parameters (the packed copy doubles their memory). Autograd does not go through packed weights, so a call that
needs gradients (trained steering adaptors back-propagate through the frozen model) uses the plain
layer. :meth:`SteerableModel.to_dtype` unpacks before any cast and packs again after one to bf16.
"""

from __future__ import annotations

import copy
import functools

import torch

#: The batch size oneDNN is told to expect when it chooses the layout (any batch size works).
_BATCH_HINT = 64
#: Packed copies sit beside the plain weights (autograd and weight readers need those), so a model
#: with more linear parameters than this is left plain: the copy would cost more memory than the
#: small-batch speed is worth (270 MB for the embedded model's 135 M).
MAX_PACKED_PARAMS = 1_000_000_000


@functools.cache
def _ops_available() -> bool:
    """Whether this PyTorch has the oneDNN ops *and* this CPU runs them: the ops ship in every x86
    build, but refuse bf16 weights on CPUs without AVX512-BF16/AVX-NE-CONVERT or AVX512BW/VL/DQ
    (seen on an AMD EPYC without AVX-512), so a tiny weight is packed once to find out."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if not (torch.backends.mkldnn.is_available() and mkldnn is not None
            and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise")):
        return False
    try:
        mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), _BATCH_HINT)
    except RuntimeError:
        return False
    return True


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose bf16 weight also sits in oneDNN's blocked layout (``packed_weight``).
    Layers become this class in place (their parameters untouched); a deep copy packs its own
    weight. Edit weights only after :func:`unpack_linears`: the packed copy is not updated."""

    packed_weight: torch.Tensor

    def __deepcopy__(self, memo):
        # the packed weight is an opaque oneDNN tensor that cannot be copied: copy the plain layer
        # and pack the copy's own weight
        packed = self.__dict__.pop("packed_weight")
        self.__class__ = torch.nn.Linear
        try:
            twin = copy.deepcopy(self, memo)
        finally:
            self.__class__, self.packed_weight = PackedLinear, packed
        _pack(twin)
        return twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dtype != torch.bfloat16 or x.device.type != "cpu"
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def pack_linears(module: torch.nn.Module) -> int:
    """Pack every bf16 CPU ``nn.Linear`` in ``module``; returns how many were packed (0 where the
    oneDNN ops are missing or refuse the weight: those layers stay plain). Subclasses of
    ``nn.Linear`` are left alone: their forward may do more than a product."""
    if not _ops_available():
        return 0
    linear_params = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    if linear_params > MAX_PACKED_PARAMS:
        return 0
    n = 0
    for layer in module.modules():
        if (type(layer) is not torch.nn.Linear or layer.weight.dtype != torch.bfloat16
                or layer.weight.device.type != "cpu"):
            continue
        try:
            _pack(layer)
        except RuntimeError:
            return n
        n += 1
    return n


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (bf16, CPU) laid out for oneDNN's kernels: an opaque tensor for
    ``torch.ops.mkldnn._linear_pointwise``."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _BATCH_HINT)


def _pack(layer: torch.nn.Linear) -> None:
    packed = pack(layer.weight)
    layer.__class__ = PackedLinear
    layer.packed_weight = packed


def unpack_linears(module: torch.nn.Module) -> int:
    """Undo :func:`pack_linears`; returns how many layers were unpacked."""
    n = 0
    for layer in module.modules():
        if type(layer) is PackedLinear:
            del layer.packed_weight
            layer.__class__ = torch.nn.Linear
            n += 1
    return n


def packed_count(module: torch.nn.Module) -> int:
    """How many layers of ``module`` run on packed weights."""
    return sum(1 for layer in module.modules() if type(layer) is PackedLinear)
