"""What steering with a direction does to the model's *next token*, exactly (no sampling): the
output side of a feature's description.

* **TokenChange** ([Gur-Arieh 2025], docs/references.md): the tokens whose next-token probability
  rises most, and falls most, when the direction is added at its α, averaged over neutral
  contexts. It is computed from full next-token distributions, so it carries no sampling noise
  (unlike rollout effects), and it names what a feature *writes*, which the logit lens (the
  decoder row through the unembedding) only approximates: the lens skips every later layer.
* **Output score** (after [Arad 2025]): the probability mass that steering moves onto the
  feature's own logit-lens tokens. A feature that scores high steers toward what it promotes; one
  that scores near zero mostly detects. Our operationalisation: Σ over the top-``k`` logit-lens
  tokens of (p_steered − p_unsteered), averaged over the contexts.

Pure tensor maths plus one batched forward pass; the pack's ``outputs`` stage stores the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from steering_core.model.steering import steer, steering

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


@dataclass
class TokenChange:
    """Per direction: token ids and probability changes of the ``k`` largest gains and losses."""

    gain_ids: torch.Tensor  # [n, k]
    gains: torch.Tensor  # [n, k], descending
    loss_ids: torch.Tensor  # [n, k]
    losses: torch.Tensor  # [n, k], most negative first


def last_position_probs(model: SteerableModel, ids: torch.Tensor, mask: torch.Tensor, steer_set=None) -> torch.Tensor:
    """Next-token probabilities at each row's last position ``[rows, vocab]`` (left-padded rows)."""
    with torch.no_grad(), steer(model, steer_set):
        logits = model.backend.forward(ids, mask)
    return torch.softmax(logits[:, -1].float(), -1)


def next_token_shift(model: SteerableModel, prompts: list[str], layer: int, directions: torch.Tensor,
                     alphas: torch.Tensor, max_rows: int = 256) -> torch.Tensor:
    """Mean over ``prompts`` of p_steered − p_unsteered at the next token, one row per direction:
    ``[n, vocab]``. Each direction steers its own copy of the contexts (one batch row each)."""
    directions = directions.reshape(-1, directions.shape[-1]).float()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(directions.shape[0]).clone()
    ids, mask = model.tokenize(list(prompts))
    ids, mask = ids.to(model.device), mask.to(model.device)
    c = ids.shape[0]
    base = last_position_probs(model, ids, mask)
    per = max(1, max_rows // c)
    out = []
    for i in range(0, directions.shape[0], per):
        d, a = directions[i:i + per], alphas[i:i + per]
        n = d.shape[0]
        st = steering(model, (layer, d.repeat_interleave(c, 0), a.repeat_interleave(c, 0)))
        p = last_position_probs(model, ids.repeat(n, 1), mask.repeat(n, 1), st)
        out.append((p.view(n, c, -1) - base.unsqueeze(0)).mean(1))
    return torch.cat(out)


def token_change(shift: torch.Tensor, k: int = 10) -> TokenChange:
    """The ``k`` largest rises and falls of each row of a probability shift."""
    k = min(k, shift.shape[-1])
    g = shift.topk(k, dim=-1)
    lo = (-shift).topk(k, dim=-1)
    return TokenChange(g.indices, g.values, lo.indices, -lo.values)


def output_score(shift: torch.Tensor, promoted: torch.Tensor) -> torch.Tensor:
    """Probability mass moved onto each direction's own promoted tokens: ``shift [n, vocab]``,
    ``promoted [n, k]`` token ids (e.g. the top-k of the logit lens) → ``[n]``."""
    return shift.gather(-1, promoted.to(shift.device).long()).sum(-1)


def logit_lens_top(w_dec_rows: torch.Tensor, unembed: torch.Tensor, k: int = 20) -> torch.Tensor:
    """Token ids each decoder row promotes most through the unembedding ``[vocab, d]``: ``[n, k]``."""
    return (w_dec_rows.float() @ unembed.float().T).topk(k, dim=-1).indices
