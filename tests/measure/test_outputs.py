"""Output-side descriptions (steering_core.measure.outputs): exact next-token shifts, TokenChange and
the output score, against hand computations on a tiny model."""

from __future__ import annotations

import pytest
import torch

from steering_core import random_unit_vector
from steering_core.measure.outputs import (
    last_position_probs,
    logit_lens_top,
    next_token_shift,
    output_score,
    token_change,
)
from steering_core.model.steering import steering
from steering_core.pack.stats import unembedding

PROMPTS = ["I think", "Breaking news", "Once upon a time"]


def test_zero_alpha_moves_nothing(tiny_hf):
    v = torch.stack([random_unit_vector(tiny_hf.d_model, s) for s in range(3)])
    shift = next_token_shift(tiny_hf, PROMPTS, 1, v, torch.zeros(3))
    assert shift.shape == (3, unembedding(tiny_hf).shape[0]) and shift.abs().max() == 0


def test_batched_shift_equals_a_loop_over_directions_and_contexts(tiny_hf):
    dirs = torch.stack([random_unit_vector(tiny_hf.d_model, s) for s in range(5)])
    alphas = torch.tensor([3.0, -2.0, 5.0, 1.0, 4.0])
    got = next_token_shift(tiny_hf, PROMPTS, 1, dirs, alphas, max_rows=7)  # forces several calls
    for i in range(5):
        rows = []
        for p in PROMPTS:
            ids, mask = tiny_hf.tokenize([p])
            base = last_position_probs(tiny_hf, ids, mask)
            st = steering(tiny_hf, (1, dirs[i], float(alphas[i])))
            rows.append(last_position_probs(tiny_hf, ids, mask, st) - base)
        assert torch.allclose(got[i], torch.cat(rows).mean(0), atol=1e-5)
    assert torch.allclose(got.sum(-1), torch.zeros(5), atol=1e-5)  # probability is conserved


def test_token_change_and_output_score_on_a_planted_shift():
    shift = torch.tensor([[0.0, 0.3, -0.1, 0.05, -0.25], [0.1, -0.1, 0.0, 0.0, 0.0]])
    tc = token_change(shift, k=2)
    assert tc.gain_ids[0].tolist() == [1, 3] and int(tc.gain_ids[1, 0]) == 0
    assert tc.gains[0].tolist() == pytest.approx([0.3, 0.05])
    assert tc.loss_ids[0].tolist() == [4, 2] and tc.losses[0].tolist() == pytest.approx([-0.25, -0.1])
    assert output_score(shift, torch.tensor([[1, 3], [1, 2]])).tolist() == pytest.approx([0.35, -0.1])


def test_steering_along_a_token_s_unembedding_raises_that_token_first(tiny_hf):
    """A visible behaviour: push the last block's output along token t's unembedding row, and t is
    the top TokenChange gain with a positive output score for its own logit-lens tokens."""
    W_U = unembedding(tiny_hf)  # [vocab, d]
    t = 37
    d = W_U[t] / W_U[t].norm()
    last = tiny_hf.n_layers - 1
    shift = next_token_shift(tiny_hf, PROMPTS, last, d[None], torch.tensor([8.0 * tiny_hf.residual_norms()[last]]))
    tc = token_change(shift, k=5)
    assert int(tc.gain_ids[0, 0]) == t
    lens = logit_lens_top(d[None], W_U, k=5)
    planted = float(output_score(shift, lens)[0])
    assert planted > 0.1
    # random directions at the same strength move their own lens tokens far less
    rand = torch.stack([random_unit_vector(d.shape[0], seed) for seed in range(8)])
    r_shift = next_token_shift(tiny_hf, PROMPTS, last, rand, torch.full((8,), 8.0 * tiny_hf.residual_norms()[last]))
    r_scores = output_score(r_shift, logit_lens_top(rand, W_U, k=5))
    assert float(r_scores.max()) < planted, (r_scores.tolist(), planted)
