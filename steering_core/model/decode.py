"""A few-row decoding step for Llama-style blocks, on fused query-key-value and gate-up weights.

Why: live steering decodes 2–8 rows, one token at a time, and there a step is the weight reads of
211 small products plus a few hundred small ops. Reading each block's query, key and value weights
as one ``[q + 2·kv, d]`` matrix and its gate and up weights as one ``[2·ff, d]`` matrix makes 4
products per block out of 7, larger ones, which the few-row kernel (``model.fewrows``) reads
faster. Measured on a 2-core AMD EPYC without AVX-512 (fp32), 2 rows × 48 tokens of the embedded
model in one run: 4.3 s on the few-row linears, 3.45 s with this step as well (5.7 s plain); the
same step on the separate weights gained only 5 %, so the gain is the fused reads, not Python.

In bf16 (on a CPU with the packed oneDNN kernels, ``model.packed``) the step runs on packed copies
of the two fused matrices instead: measured on a 2-core AMD EPYC with AVX512-BF16, 2 rows × 48
tokens of the embedded model took 1.6 s against 1.95 s on two threads (2.0 against 2.3 s on one),
with the same tokens. Those copies sit beside the layers' own packed weights (about 130 MB more for
the embedded model), and like them they are not updated by an in-place edit: edit weights after
:func:`~steering_core.model.packed.unpack_linears`, which ends the step, and packing the
layers again does not bring it back on stale copies (the step checks that each layer still has the
packed weight it was fused with).

In fp32 the fused matrices are the weights themselves: each block's ``q_proj`` … ``up_proj`` weights
become views into them, so an in-place edit of a weight (an ablation) is seen by both paths and
nothing is stored twice. Before every step the block checks that the views are intact (same
storage, fp32, CPU; in bf16, the same packed layers), that no hook sits inside the block (hooks on
the block itself, which is where steering and residual recording live, still run as always), that
the model uses the decode-step attention and that the call is a no-gradient step of at most
``MAX_ROWS`` rows (``MAX_ROWS_PACKED`` in bf16); otherwise it runs the Hugging Face forward.
Large calls, such as the pack's 896-row effect measurement, therefore compute exactly what they
did before.

The arithmetic is the Hugging Face block's, op for op, except that the fused products are summed
by the kernel for the larger matrix, so logits agree with the unfused block to float rounding
(``tests/model/test_model_decode.py``): tokens were the same on the embedded model and the tiny one.
Within the path every guarantee holds as before: α = 0 equals unsteered bit for bit, KV-cached
decoding equals re-running the sequence.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass

import torch

from steering_core.model import fewrows
from steering_core.model.attention import NAME as DECODE_ATTENTION
from steering_core.model.attention import _decode_attention
from steering_core.model.fewrows import product as _product  # the few-row kernel
from steering_core.model.packed import PackedLinear, pack

#: Block classes whose forward this step reproduces (Hugging Face 5.x). Another Llama-like block
#: is added here once a test shows its step equals its own forward.
BLOCKS = ("LlamaDecoderLayer",)
#: Largest batch a step runs on fused weights in fp32 (the few-row kernel's limit).
MAX_ROWS = fewrows.MAX_ROWS
#: Largest batch a bf16 step runs on packed fused weights. Four larger products instead of seven
#: pay up to a few hundred rows: on a 2-core AMD EPYC with AVX512-BF16 the effect measurement's
#: 224-row calls took 0.95 of the plain blocks' time, and its 896-row calls (the pack build's) the
#: same time, so those stay on the plain blocks and keep their bits.
MAX_ROWS_PACKED = 256

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass
class _Fused:
    # fp32: [n_q + 2·n_kv, d] and [2·n_ff, d], the q, k, v and gate, up weights are views into them;
    # bf16: oneDNN-packed copies of the same matrices (opaque tensors)
    qkv: torch.Tensor
    gate_up: torch.Tensor
    n_q: int
    n_kv: int
    heads: int
    kv_heads: int
    head_dim: int
    inner: tuple[torch.nn.Module, ...]  # every submodule: a hook on any of them needs the plain forward
    layers: tuple[torch.nn.Module, ...]  # q, k, v, gate, up, o and down projections, as fused
    pointers: tuple[int, ...]  # fp32: where the q, k, v, gate and up weights start in the fused matrices
    dtype: torch.dtype = torch.float32
    packed: tuple[torch.Tensor, ...] = ()  # bf16: the seven layers' packed weights when fused

    @property
    def max_rows(self) -> int:
        """The largest call this block's step takes on its fused weights (larger ones run plain)."""
        return MAX_ROWS if self.dtype == torch.float32 else MAX_ROWS_PACKED

    def intact(self, block: torch.nn.Module) -> bool:
        """Whether the block still has the layers it was fused with, and (fp32) their weights are
        still the fused matrices' views or (bf16) every layer is still packed (a cast, a move to
        another device, a replaced parameter, an unpacking or a wrapped layer ends that). Runs every
        step, so it reads the module and parameter dictionaries directly: 30 µs through attribute
        lookups, a third of that so."""
        a, m = block._modules["self_attn"]._modules, block._modules["mlp"]._modules
        layers = (a["q_proj"], a["k_proj"], a["v_proj"], m["gate_proj"], m["up_proj"], a["o_proj"], m["down_proj"])
        if any(x is not y for x, y in zip(layers, self.layers)):
            return False
        weights = [x._parameters["weight"] for x in layers]
        if any(x._parameters.get("bias") is not None or w.dtype != self.dtype for x, w in zip(layers, weights)):
            return False
        if self.dtype == torch.bfloat16:  # packed again after an edit: new packed weights, stale copies
            return all(type(x) is PackedLinear and x.__dict__.get("packed_weight") is p
                       for x, p in zip(layers, self.packed))
        return tuple(w.data_ptr() for w in weights[:5]) == self.pointers

    def __deepcopy__(self, memo) -> _Fused:
        """A copied model's blocks decode on the copy's own weights. An fp32 record copies as any
        object (its matrices with the weights that view them); a bf16 one packs the copied layers'
        weights again, since oneDNN's packed tensors cannot be copied."""
        fields = {k: copy.deepcopy(v, memo) for k, v in vars(self).items() if k not in ("qkv", "gate_up", "packed")}
        if self.dtype == torch.bfloat16:
            q, k, v, g, u = (lin.weight for lin in fields["layers"][:5])
            with torch.no_grad():
                return _Fused(qkv=pack(torch.cat([q, k, v])), gate_up=pack(torch.cat([g, u])),
                              packed=tuple(lin.packed_weight for lin in fields["layers"]), **fields)
        return _Fused(qkv=copy.deepcopy(self.qkv, memo), gate_up=copy.deepcopy(self.gate_up, memo), **fields)

    def product(self, which: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x · Wᵀ`` for a fused matrix (given) or for layer ``which`` (5: o_proj, 6: down_proj)."""
        if self.dtype == torch.bfloat16:
            w = self.layers[which].packed_weight if isinstance(which, int) else which
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return _product(self.layers[which].weight if isinstance(which, int) else which, x)

    def hooked(self) -> bool:
        return any(s._forward_hooks or s._forward_pre_hooks for s in self.inner) or bool(
            torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks)


def _eligible(block: torch.nn.Module) -> bool:
    if type(block).__name__ not in BLOCKS:
        return False
    a, m = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    if a is None or m is None or getattr(getattr(a, "config", None), "hidden_act", None) != "silu":
        return False
    linears = [getattr(a, n, None) for n in _ATTN] + [getattr(m, n, None) for n in _MLP]
    if any(not isinstance(lin, torch.nn.Linear) or lin.bias is not None for lin in linears):
        return False
    return all(hasattr(n, "weight") and hasattr(n, "variance_epsilon")
               for n in (getattr(block, "input_layernorm", None), getattr(block, "post_attention_layernorm", None)))


def fuse_blocks(module: torch.nn.Module) -> int:
    """Give every eligible CPU block of ``module`` the fused decoding step, fp32 blocks or bf16
    blocks whose layers are packed (:func:`~steering_core.model.packed.pack_linears` first); returns
    how many."""
    n = 0
    for block in module.modules():
        if "_steering_fused" in block.__dict__ or not _eligible(block):
            continue
        a, m = block.self_attn, block.mlp
        if a.q_proj.weight.device.type != "cpu":
            continue
        layers = (a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj, a.o_proj, m.down_proj)
        if a.q_proj.weight.dtype == torch.bfloat16 and all(type(x) is PackedLinear for x in layers):
            with torch.no_grad():
                qkv = pack(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
                gate_up = pack(torch.cat([m.gate_proj.weight, m.up_proj.weight]))
            _install(block, _Fused(qkv, gate_up, a.q_proj.out_features, a.k_proj.out_features,
                                   a.q_proj.out_features // a.head_dim, a.k_proj.out_features // a.head_dim,
                                   a.head_dim, tuple(s for s in block.modules() if s is not block), layers, (),
                                   torch.bfloat16, tuple(x.packed_weight for x in layers)))
            n += 1
            continue
        if a.q_proj.weight.dtype != torch.float32:
            continue
        with torch.no_grad():
            qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).contiguous()
            gate_up = torch.cat([m.gate_proj.weight, m.up_proj.weight]).contiguous()
        n_q, n_kv, n_ff = a.q_proj.out_features, a.k_proj.out_features, m.gate_proj.out_features
        a.q_proj.weight.data = qkv[:n_q]
        a.k_proj.weight.data = qkv[n_q:n_q + n_kv]
        a.v_proj.weight.data = qkv[n_q + n_kv:]
        m.gate_proj.weight.data = gate_up[:n_ff]
        m.up_proj.weight.data = gate_up[n_ff:]
        inner = tuple(s for s in block.modules() if s is not block)
        _install(block, _Fused(qkv, gate_up, n_q, n_kv, n_q // a.head_dim, n_kv // a.head_dim, a.head_dim, inner,
                               layers, tuple(x.weight.data_ptr() for x in layers[:5])))
        n += 1
    return n


def _install(block: torch.nn.Module, fused: _Fused) -> None:
    block._steering_fused = fused
    block.forward = types.MethodType(_step, block)


def unfuse_blocks(module: torch.nn.Module) -> int:
    """Undo :func:`fuse_blocks`: each weight gets its own storage again; returns how many blocks."""
    n = 0
    for block in module.modules():
        fused = block.__dict__.pop("_steering_fused", None)
        if fused is None:
            continue
        block.__dict__.pop("forward", None)
        n += 1
        if fused.dtype != torch.float32:
            continue  # the packed copies go with the record; the weights were never views
        with torch.no_grad():
            for lin in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj,
                        block.mlp.gate_proj, block.mlp.up_proj):
                lin.weight.data = lin.weight.data.clone()
    return n


def fused_count(module: torch.nn.Module) -> int:
    """How many blocks of ``module`` decode on fused weights."""
    return sum(1 for block in module.modules() if "_steering_fused" in block.__dict__)


def _rms(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    # LlamaRMSNorm op for op: in fp32 and back to the input's precision (in fp32 the casts are no-ops
    # and skipped, since each costs a call)
    h = x if x.dtype == torch.float32 else x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * (h if x.dtype == torch.float32 else h.to(x.dtype))


def _step(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None, past_key_values=None,
          use_cache=False, position_embeddings=None, **kwargs):
    f: _Fused = self._steering_fused
    b = hidden_states.shape[0]
    if (hidden_states.dim() != 3 or hidden_states.shape[1] != 1
            or not 0 < b <= f.max_rows
            or hidden_states.dtype != f.dtype or hidden_states.device.type != "cpu"
            or past_key_values is None or position_embeddings is None
            or (torch.is_grad_enabled() and hidden_states.requires_grad)
            or self.self_attn.config._attn_implementation != DECODE_ATTENTION
            or f.hooked() or not f.intact(self)):
        return type(self).forward(self, hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                  past_key_values=past_key_values, use_cache=use_cache,
                                  position_embeddings=position_embeddings, **kwargs)
    a = self.self_attn
    heads, kv_heads, d = f.heads, f.kv_heads, f.head_dim
    x = hidden_states.reshape(b, -1)
    qkv = f.product(f.qkv, _rms(self.input_layernorm, x))
    qk = qkv[:, :f.n_q + f.n_kv].view(b, heads + kv_heads, d)
    cos, sin = position_embeddings  # [b, 1, head_dim], as the model computed them
    half = d // 2
    qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), -1) * sin  # rotary, as apply_rotary_pos_emb
    q = qk[:, :heads].unsqueeze(2)
    k, v = past_key_values.update(qk[:, heads:].unsqueeze(2), qkv[:, f.n_q + f.n_kv:].view(b, kv_heads, 1, d),
                                  a.layer_idx)
    out, _ = _decode_attention(a, q, k, v, attention_mask, scaling=a.scaling)
    x = x + f.product(5, out.reshape(b, heads * d))
    gu = f.product(f.gate_up, _rms(self.post_attention_layernorm, x))
    n_ff = gu.shape[1] // 2
    x = x + f.product(6, torch.nn.functional.silu(gu[:, :n_ff]) * gu[:, n_ff:])
    return x.view(b, 1, -1)
