"""fp32 linears that multiply a few rows the transposed way (steering_core.model.fewrows): the same
products as the plain layer to float rounding, the plain layer wherever it does not apply, and
every within-path guarantee intact."""

from __future__ import annotations

import copy

import pytest
import torch

from steering_core import GenerationConfig, generate, load_model
from steering_core.model import fewrows
from steering_core.model.fewrows import FewRowsLinear, few_rows_count, plain_few_rows, use_few_rows
from steering_core.model.packed import packed_count

PROMPTS = ["hello world", "a much longer prompt than the first"]


def _linears(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("rows", [1, 2, 7, fewrows.MAX_ROWS, fewrows.MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_few_row_products_equal_the_plain_layer_to_rounding(rows, bias):
    torch.manual_seed(rows)
    plain = torch.nn.Linear(96, 160, bias=bias)
    fast = copy.deepcopy(plain)
    assert use_few_rows(fast) == 1 and type(fast) is FewRowsLinear
    x = torch.randn(rows, 1, 96)
    with torch.no_grad():
        want, got = plain(x), fast(x)
    assert got.shape == want.shape == (rows, 1, 160) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if rows > fewrows.MAX_ROWS:
        assert torch.equal(got, want)  # above the cap: the plain layer itself


def test_the_transposed_product_runs_only_where_it_applies(monkeypatch):
    """Gradients, bf16 inputs and large calls go to the plain layer: checked by counting calls
    into ``torch.mm`` from the layer, not by timing."""
    calls = []
    real_mm = torch.mm

    def counting_mm(*args, **kwargs):
        calls.append(args[0].shape)
        return real_mm(*args, **kwargs)

    layer = torch.nn.Linear(8, 4)
    use_few_rows(layer)
    monkeypatch.setattr(torch, "mm", counting_mm)
    with torch.no_grad():
        layer(torch.randn(3, 8))
    assert len(calls) == 1
    layer(torch.randn(3, 8, requires_grad=True)).sum().backward()  # gradient: plain
    with torch.no_grad():
        layer(torch.randn(fewrows.MAX_ROWS + 1, 8))  # large: plain
        layer.to(torch.bfloat16)(torch.randn(3, 8, dtype=torch.bfloat16))  # bf16: plain
    assert len(calls) == 1


def test_fp32_models_load_with_few_row_linears_and_casts_swap_them():
    model = load_model("tiny", precision="fp32")
    n = len(_linears(model.module))
    assert few_rows_count(model.module) == n > 0
    model.to_dtype(torch.bfloat16)
    assert few_rows_count(model.module) == 0  # a bf16 model packs (or keeps plain) instead
    assert packed_count(model.module) in (0, n)
    model.to_dtype(torch.float32)
    assert few_rows_count(model.module) == n and packed_count(model.module) == 0


def test_generation_on_few_row_linears_matches_the_plain_model():
    """Same tokens as the plain fp32 model on the tiny model (its logits differ in the last bits
    only), and within the path α = 0 equals unsteered bit for bit."""
    fast = load_model("tiny", precision="fp32")
    plain = load_model("tiny", precision="fp32")
    assert plain_few_rows(plain.module) == few_rows_count(fast.module)
    ids = torch.randint(0, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = fast.backend.forward(ids, torch.ones_like(ids))
        b = plain.backend.forward(ids, torch.ones_like(ids))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=5, stop_at_eos=False)
    assert generate(fast, PROMPTS, cfg).token_ids == generate(plain, PROMPTS, cfg).token_ids
    v = torch.randn(fast.d_model, generator=torch.Generator().manual_seed(1))
    assert generate(fast, PROMPTS, cfg, steering=[(1, v, 0.0)]).token_ids == generate(fast, PROMPTS, cfg).token_ids
