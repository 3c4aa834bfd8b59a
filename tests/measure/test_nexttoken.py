"""Next-token Δp curves and the ΔCE curve with its quadratic fit, on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steering_core import random_unit_vector
from steering_core.measure.nexttoken import NextTokenError, dce_curve, next_token_curves
from steering_core.model.steering import make_term, steer, steering


def test_delta_p_matches_single_steered_runs(tiny_hf, one_thread):
    v = random_unit_vector(tiny_hf.d_model, 4)
    cur = next_token_curves(tiny_hf, "hello there", v, 1, [-5.0, 5.0], tokens=["the"], top_movers=3, chat=False)
    assert cur.alphas.tolist() == [-5.0, 0.0, 5.0]
    assert cur.chosen == [True, False, False, False] and len(cur.tokens) == 4
    assert np.allclose(cur.delta_p[1], 0.0)
    ids, mask = tiny_hf.tokenize(["hello there"])
    with torch.no_grad(), steer(tiny_hf, steering(tiny_hf, make_term(tiny_hf, 1, v, 5.0))):
        p5 = torch.softmax(tiny_hf.backend.forward(ids, mask)[0, -1].float(), -1)
    with torch.no_grad():
        p0 = torch.softmax(tiny_hf.backend.forward(ids, mask)[0, -1].float(), -1)
    ref = (p5 - p0)[cur.token_ids].numpy()
    assert np.allclose(cur.delta_p[2], ref, atol=1e-5)
    # the movers are the tokens whose probability moves most
    assert abs(cur.delta_p[:, 1]).max() >= abs(cur.delta_p[:, 3]).max()


def test_dce_curve_fit_is_close_to_the_curve_near_zero(tiny_hf, one_thread):
    v = random_unit_vector(tiny_hf.d_model, 5)
    h = 0.05 * tiny_hf.residual_norms()[1]
    grid = [k * h for k in (-8, -4, -2, -1, 0, 1, 2, 4, 8)]
    cur = dce_curve(tiny_hf, 1, v, grid, fit_fraction=0.25)
    assert cur.dce[4] == pytest.approx(0.0, abs=1e-5)
    small = np.abs(cur.alphas) <= cur.fit_range
    fitted = cur.slope * cur.alphas + 0.5 * cur.curvature * cur.alphas ** 2
    assert np.allclose(fitted[small], cur.dce[small], rtol=0.1, atol=1e-4)


def test_bad_requests(tiny_hf):
    v = random_unit_vector(tiny_hf.d_model, 0)
    with pytest.raises(NextTokenError, match="empty"):
        next_token_curves(tiny_hf, "  ", v, 1, [1.0])
    with pytest.raises(NextTokenError, match="finite"):
        next_token_curves(tiny_hf, "hi", v, 1, [float("inf")])
    with pytest.raises(NextTokenError, match="two non-zero"):
        dce_curve(tiny_hf, 1, v, [0.0, 1.0])


def test_typed_tokens_skip_stray_commas_and_say_when_a_word_is_several_tokens(tiny_hf):
    """Audit: " , ,zzzqqq, wedding" drew a curve for a space token nobody asked for, and followed
    only the first piece of "zzzqqq" without a word."""
    from steering_core.measure.nexttoken import chosen_tokens

    enc = lambda t: tiny_hf.tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    long = next(w for w in ("zzzqqq", "xqzvbnm", "antidisestablishment") if len(enc(w)) > 1)
    one = next(t for t in (tiny_hf.tokenizer.decode([i]) for i in range(5, 500))
               if t.strip() and len(enc(t)) == 1 and enc(t)[0] != enc(long)[0])
    ids, notes = chosen_tokens(tiny_hf, " , ,|".replace("|", long).split(",") + [one])
    assert ids == [enc(long)[0], enc(one)[0]]
    assert notes == [f"{long!r} is {len(enc(long))} tokens; its curve follows the first, "
                     f"{tiny_hf.tokenizer.decode(enc(long)[:1])!r}."]
    v = random_unit_vector(tiny_hf.d_model, 4)
    cur = next_token_curves(tiny_hf, "hello", v, 1, [1.0], tokens=[" ", long], top_movers=0, chat=False)
    assert cur.token_ids == [enc(long)[0]] and cur.notes == notes
