"""Counter-based random numbers and Gumbel-max sampling: the one place randomness enters generation.

Why counter-based: the noise a row sees at a step for a token is a pure function of
``(row seed, step, token id)``, computed by a hash on whole tensors. That gives three things at once:

* **reproducibility per row**: a row's tokens depend on its own seed and logits only, never on the
  rest of the batch or on how many rows or steps were asked for;
* **speed**: no per-row ``torch.Generator`` objects and no per-row Python in the decoding loop;
* **coupling**: a steered and an unsteered row with the same seed draw the *same* noise for every
  token, so with Gumbel-max sampling they pick the same token whenever steering has not moved that
  token's lead (probability ≥ (1 − TV)/(1 + TV)). Their difference, which is what an effect is, then
  carries far less sampling noise than two independent draws would (docs/design.md §Coupled rollouts).

Gumbel-max is exact sampling: ``argmax_v (logit_v / T + G_v)`` with i.i.d. standard Gumbel ``G_v``
picks ``v`` with probability softmax(logit / T)_v. Top-k and top-p restrict the candidates first.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from steering_core.model.generation import GenerationConfig

_M64 = (1 << 64) - 1


def _signed(x: int) -> int:
    x &= _M64
    return x - (1 << 64) if x >= 1 << 63 else x


_C1 = _signed(0xBF58476D1CE4E5B9)
_C2 = _signed(0x94D049BB133111EB)
_GOLDEN = _signed(0x9E3779B97F4A7C15)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (multiplication wraps modulo 2⁶⁴)."""
    x = x + _GOLDEN
    x = (x ^ _srl(x, 30)) * _C1
    x = (x ^ _srl(x, 27)) * _C2
    return x ^ _srl(x, 31)


def uniform(seeds: torch.Tensor, step: int, tokens: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in (0, 1), float64, one per ``(row seed, step, token id)``.

    ``seeds`` is ``[rows]`` int64, ``tokens`` is ``[rows, k]`` (or ``[k]``, shared by all rows)."""
    seeds = seeds.to(torch.int64)
    h = mix64(mix64(seeds) + int(step))
    h = mix64(h.unsqueeze(-1) + tokens.to(torch.int64).to(h.device))
    return (_srl(h, 11).double() + 0.5) * (1.0 / (1 << 53))


def gumbel(seeds: torch.Tensor, step: int, tokens: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise, float32, for each ``(row seed, step, token id)``."""
    return (-torch.log(-torch.log(uniform(seeds, step, tokens)))).float()


def row_seed(seed: int, *index: int) -> int:
    """The seed of row ``index`` (one or more whole numbers) of a run started with ``seed``: a hash,
    so runs with neighbouring seeds share no rows (``seed + j`` would make seeds 0 and 1 share all but
    one row). Any integer seed works, negative ones included; the result fits a signed int64."""
    key = ":".join(str(int(i)) for i in (seed, *index))
    return int.from_bytes(hashlib.sha256(f"row-seed:{key}".encode()).digest()[:8], "little") >> 1


def row_seeds(seed: int, n: int) -> list[int]:
    """The default seeds of an ``n``-row generation with ``seed``."""
    return [row_seed(seed, j) for j in range(n)]


#: Vocabulary block width of :func:`top_candidates`.
BLOCK = 64


def top_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits per row (float32, descending) and their token ids, as ``torch.topk``
    gives them, at a fraction of its cost on a large vocabulary.

    Why: a top-k over 49,152 logits for every row and step cost as much as the unembedding matmul
    itself on the CPU. The k largest values lie in at most k blocks of the vocabulary, and those
    blocks are among the k blocks with the largest maxima (a block holding one of them has a maximum
    at least the k-th value, and at most k blocks can). So: block maxima, the top k blocks, then the
    top k of their ``k × BLOCK`` entries: the same values, read in a few percent of the work, and
    only the candidates are converted to float32. Exact ties at the k-th value may keep another of
    the tied tokens than ``torch.topk`` would (which one it keeps is unspecified too)."""
    rows, vocab = logits.shape
    nb = -(-vocab // BLOCK)
    if k * BLOCK * 4 >= vocab or nb <= k:  # small vocabularies: the plain top-k is as cheap
        return torch.topk(logits.float(), k, dim=-1)
    if nb * BLOCK != vocab:
        pad = logits.new_full((rows, nb * BLOCK - vocab), float("-inf"))
        logits = torch.cat([logits, pad], dim=-1)
    blocks = logits.reshape(rows * nb, BLOCK)
    top_blocks = blocks.view(rows, nb, BLOCK).amax(-1).topk(k, dim=-1).indices  # [rows, k]
    flat = (top_blocks + torch.arange(rows, device=logits.device).unsqueeze(1) * nb).reshape(-1)
    cand = blocks.index_select(0, flat).reshape(rows, k * BLOCK)
    ids = (top_blocks.unsqueeze(-1) * BLOCK + torch.arange(BLOCK, device=logits.device)).reshape(rows, k * BLOCK)
    vals, j = cand.float().topk(k, dim=-1)
    return vals, ids.gather(-1, j)


def sample_next(logits: torch.Tensor, config: GenerationConfig, seeds: torch.Tensor, step: int) -> torch.Tensor:
    """Pick one token per row by Gumbel-max with counter-based noise (see the module docstring)."""
    if config.is_greedy:
        return logits.argmax(-1)
    seeds = torch.as_tensor(seeds, dtype=torch.int64)
    vocab = logits.shape[-1]
    if config.top_k is not None and config.top_k < vocab:
        vals, idx = top_candidates(logits, config.top_k)
    else:
        vals = logits.float()
        idx = torch.arange(vocab, device=logits.device).expand_as(vals)
    vals = vals / config.temperature
    if config.top_p is not None and config.top_p < 1:
        sorted_v, order = vals.sort(dim=-1, descending=True)
        p = torch.softmax(sorted_v, dim=-1)
        before = p.cumsum(-1) - p  # mass strictly above each token
        drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= config.top_p)
        vals = vals.masked_fill(drop, float("-inf"))
    score = vals + gumbel(seeds, step, idx).to(vals.device)
    j = score.argmax(-1, keepdim=True)
    return idx.gather(-1, j).squeeze(-1)
